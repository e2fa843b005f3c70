"""Does a model read blur as "fake"? Face sharpness of the corpus against stored product-path scores.

    .venv/bin/python scripts/sharpness_report.py work/corpus/manifest.parquet models/evaluations/A [B ...]

FaceForensics++ methods differ from their reals in overall sharpness (Deepfakes blurrier, FaceSwap
sharper), so a detector can learn blur as a cue. Prints, from the corpus manifest's stored crops
(`train/sharpness.py`: Laplacian variance of the face centre), the median sharpness per dataset and
method; then per evaluation folder (raw or archived, the same corpus): the Spearman correlation of
p(fake) with sharpness on test reals, the false-positive rate at the model's threshold per sharpness
third of real photos (aaf_real + utk_real) and of FF++ crop reals, and each FF++ method's AUC against
FF++ crop reals, pooled and within sharpness quintiles (what the model sees apart from blur).
Diagnosis only; no model is run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from archive_evaluation import hashed_source_id  # scripts/ beside this file: the archives' ids

from deepfake_detection.evaluate.metrics import roc_auc
from deepfake_detection.train.sharpness import face_sharpness

PHOTOS = ("aaf_real", "utk_real")
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")


def corpus_sharpness(manifest: Path, measure: Callable[[str], float] = face_sharpness,
                     columns: Sequence[str] = ()) -> pd.DataFrame:
    """Per manifest row: dataset, method (and `columns`), and the sharpness of its stored crop."""
    rows = pd.read_parquet(manifest, columns=["crop_path", "source_id", "dataset", "method", *columns])
    rows["sharpness"] = [measure(str(manifest.parent / p)) for p in rows["crop_path"]]
    return rows


def by_source(corpus: pd.DataFrame) -> pd.Series:
    """Sharpness by source id, raw and as archive_evaluation.py hashes it (the sharpest face of a file)."""
    hashed = corpus["source_id"].map(hashed_source_id)
    both = pd.concat([corpus.assign(key=corpus["source_id"]), corpus.assign(key=hashed)])
    return both.groupby("key")["sharpness"].max()


def _spearman(a: pd.Series, b: pd.Series) -> float:
    return float(a.rank().corr(b.rank()))


def model_rows(scores: pd.DataFrame, threshold: float, sharpness: pd.Series) -> dict[str, str]:
    """One table row of figures for one evaluation's frames."""
    d = scores.assign(sharpness=scores["source_id"].map(sharpness)).dropna(subset=["score", "sharpness"])
    out: dict[str, str] = {}
    reals = d[d["label"] == 0]
    for name, part in (("photos", reals[reals["dataset"].isin(PHOTOS)]),
                       ("FF++ crop reals", reals[reals["dataset"] == "ffpp_crops"])):
        if len(part) < 3:
            out[name] = "n/a"
            continue
        third = pd.qcut(part["sharpness"].rank(method="first"), 3, labels=False)
        fpr = [float((part["score"][third == k] >= threshold).mean()) for k in (0, 2)]
        out[name] = (f"rho {_spearman(part['score'], part['sharpness']):+.2f}; "
                     f"FPR blurriest / sharpest third {fpr[0]:.3f} / {fpr[1]:.3f}")
    crops = d[d["dataset"] == "ffpp_crops"]
    for method in METHODS:
        part = crops[(crops["label"] == 0) | (crops["method"] == method)]
        if part["label"].nunique() < 2:
            out[method] = "n/a"
            continue
        fifth = pd.qcut(part["sharpness"].rank(method="first"), 5, labels=False)
        strata = [(len(s), roc_auc(s["label"], s["score"])) for _, s in part.groupby(fifth)
                  if s["label"].nunique() == 2]
        within = sum(n * a for n, a in strata) / sum(n for n, _ in strata)
        out[method] = f"{roc_auc(part['label'], part['score']):.3f} / {within:.3f}"
    return out


def report(manifest: Path, evaluations: list[Path]) -> str:
    corpus = corpus_sharpness(manifest)
    medians = corpus.groupby(["dataset", "method"])["sharpness"].median().round(1)
    lines = ["Median face sharpness (Laplacian variance of the crop's centre) per dataset and method:", "",
             "| dataset | method | median | crops |", "| --- | --- | --- | --- |"]
    counts = corpus.groupby(["dataset", "method"]).size()
    lines += [f"| {ds} | {m} | {v} | {counts[(ds, m)]} |" for (ds, m), v in medians.items()]
    sharpness = by_source(corpus)
    head = ["evaluation", "photos", "FF++ crop reals", *(f"{m}: pooled / within quintiles" for m in METHODS)]
    lines += ["", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for folder in evaluations:
        threshold = float(json.loads((folder / "metrics.json").read_text())["threshold"])
        row = model_rows(pd.read_csv(folder / "scores.csv"), threshold, sharpness)
        lines.append(f"| `{folder.name}` | " + " | ".join(row.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("manifest", type=Path, help="the corpus manifest of the evaluations' test split")
    parser.add_argument("evaluations", type=Path, nargs="+", help="dfd evaluate (or archived) folders")
    args = parser.parse_args(argv)
    try:
        print(report(args.manifest, args.evaluations), end="")
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
