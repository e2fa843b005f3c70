"""The product's blurry-face threshold (`faces/quality.py`), and the false alarms either side of it.

    .venv/bin/python scripts/blurry_face_threshold.py work/corpus/manifest.parquet \
        work/corpus/manifest_fold4.parquet models/evaluations/v7chain_v7step_fold{0,1,2,3} \
        models/evaluations/v6jcsoup_tta_fold4

The threshold is a quantile (`--quantile`, default the lower third) of the crop sharpness of the
training reals of FOLD_MANIFEST (the bundled model's fold: its own training faces; no test label or
score is read for it). Sharpness is `faces/quality.py`'s `crop_sharpness` of each stored crop, i.e. at
the classifier's reference size, as `dfd detect` measures it (the stored crop stands in for the
product's crop of the same face: the same protocol, resized). Then per evaluation folder (raw or
archived, of CORPUS): the false-positive rate at the folder's threshold of test reals below and at or
above the threshold, for real photos and FF++ crop reals, and the share of test fakes it flags.

`--detect` (the bundled model by default, `--model FILE` another) also runs the product itself on
FOLD_MANIFEST's test reals (photos and FF++ crops): each source file decoded, padded as `dfd prepare`
padded it, detected, cropped and classified, as `dfd evaluate` does, and reads the false alarms with
and without the product's own `blurry` warning, and how often it agrees with the stored crops' flag.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from sharpness_report import PHOTOS, by_source, corpus_sharpness  # scripts/ beside this file

from deepfake_detection.faces.quality import crop_sharpness


def stored_crop_sharpness(path: str) -> float:
    """`crop_sharpness` of a stored crop, read once per file (the fold manifest, the corpus and the test
    reals name the same crops)."""
    return _crop_file_sharpness(str(Path(path).resolve()))


@cache
def _crop_file_sharpness(path: str) -> float:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read crop {path}")
    return crop_sharpness(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def training_threshold(fold_manifest: Path, quantile: float) -> tuple[float, int]:
    rows = corpus_sharpness(fold_manifest, stored_crop_sharpness, columns=["split", "label"])
    reals = rows[(rows["split"] == "train") & (rows["label"] == 0)]
    return float(np.quantile(reals["sharpness"], quantile)), len(reals)


def _fpr(part: pd.DataFrame, threshold: float) -> str:
    return f"{(part['score'] >= threshold).mean():.3f} ({len(part)})" if len(part) else "n/a"


def evaluation_row(scores: pd.DataFrame, threshold: float, sharpness: pd.Series,
                   blurry_below: float) -> list[str]:
    d = scores.assign(sharpness=scores["source_id"].map(sharpness)).dropna(subset=["score", "sharpness"])
    blurry = d["sharpness"] < blurry_below
    reals = d["label"] == 0
    cells = []
    for pool in (d["dataset"].isin(PHOTOS), d["dataset"] == "ffpp_crops"):
        cells += [_fpr(d[reals & pool & blurry], threshold), _fpr(d[reals & pool & ~blurry], threshold)]
    cells.append(f"{blurry[reals].mean():.2f} / {blurry[~reals].mean():.2f}")
    return cells


def product_check(fold_manifest: Path, model: str | None, blurry_below: float) -> str:
    """False alarms of the product with and without its blurry-face warning, on the fold's test reals
    (scored as `dfd evaluate` scores them: `score_sources`, whose frame rows say whether it warned)."""
    from deepfake_detection.evaluate.product_path import score_sources
    from deepfake_detection.infer.predictor import Predictor
    from deepfake_detection.train.data import load_manifests

    rows = load_manifests([fold_manifest])  # with each row's source padding, as prepared
    rows = rows[(rows["split"] == "test") & (rows["label"] == 0)
                & (rows["dataset"].isin(PHOTOS) | (rows["dataset"] == "ffpp_crops"))]
    stored_blurry = {s: stored_crop_sharpness(str(p)) < blurry_below
                     for s, p in zip(rows["source_id"], rows["crop_path"], strict=True)}
    predictor = Predictor.load(model)
    frames = score_sources(predictor, rows).frames
    d = pd.DataFrame({"pool": np.where(frames["dataset"] == "ffpp_crops", "FF++ crop reals", "photos"),
                      "false_alarm": frames["score"] >= predictor.threshold, "warned": frames["blurry"],
                      "stored_blurry": frames["source_id"].map(stored_blurry)})
    lines = ["", f"The product ({predictor.model_info['name']}, threshold {predictor.threshold:.3f}) on the "
             f"test reals of {fold_manifest.name}:", "",
             "| reals | FPR, warned blurry (n) | FPR, not warned (n) | agreement with the stored flag |",
             "| --- | --- | --- | --- |"]
    for pool, part in d.groupby("pool"):
        cells = [f"{part['false_alarm'][part['warned'] == w].mean():.3f} ({int((part['warned'] == w).sum())})"
                 for w in (True, False)]
        agree = (part["warned"] == part["stored_blurry"]).mean()
        lines.append(f"| {pool} | {cells[0]} | {cells[1]} | {agree:.3f} |")
    return "\n".join(lines) + "\n"


def report(corpus_manifest: Path, fold_manifest: Path, evaluations: list[Path], quantile: float) -> str:
    below, n = training_threshold(fold_manifest, quantile)
    lines = [f"Blurry-face threshold: crop sharpness {below:.1f}, the {quantile:.3f} quantile of "
             f"{n} training reals of {fold_manifest.name}.", ""]
    sharpness = by_source(corpus_sharpness(corpus_manifest, stored_crop_sharpness))
    head = ["evaluation", "photos FPR, blurry (n)", "photos FPR, not blurry (n)",
            "FF++ reals FPR, blurry (n)",
            "FF++ reals FPR, not blurry (n)", "share flagged, test reals / fakes"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for folder in evaluations:
        threshold = float(json.loads((folder / "metrics.json").read_text())["threshold"])
        row = evaluation_row(pd.read_csv(folder / "scores.csv"), threshold, sharpness, below)
        lines.append(f"| `{folder.name}` | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path, help="the corpus manifest of the evaluations' test splits")
    parser.add_argument("fold_manifest", type=Path,
                        help="the bundled model's fold manifest (its train split)")
    parser.add_argument("evaluations", type=Path, nargs="*", help="dfd evaluate (or archived) folders")
    parser.add_argument("--quantile", type=float, default=1 / 3)
    parser.add_argument("--detect", action="store_true",
                        help="also run the product on the fold's test reals")
    parser.add_argument("--model", help="with --detect: a model file (default: the bundled model)")
    args = parser.parse_args(argv)
    try:
        print(report(args.corpus, args.fold_manifest, args.evaluations, args.quantile), end="")
        if args.detect:
            from deepfake_detection.faces.quality import BLURRY_FACE_SHARPNESS
            print(product_check(args.fold_manifest, args.model, BLURRY_FACE_SHARPNESS), end="")
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
