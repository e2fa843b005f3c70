"""The default-model validation table: every figure the model issue asks for, with cluster-bootstrap
95% intervals over identity groups, next to its bar.

Input: `dfd evaluate` folders (product mode: scores.csv with per-frame clean and degraded scores,
videos.csv with `dfd detect`'s video verdicts, metrics.json), one per k-fold test split of the corpus
built by scripts/build_corpus_listing.py; optionally the `lomo.json` of
scripts/leave_one_method_out.py. Figures of the first folder get intervals; the k-fold mean is over
all folders given.

    .venv/bin/python scripts/validation_report.py work/eval_fold0 [work/eval_fold1 ...] \
        --lomo work/lomo/lomo.json --out work/validation.md

What a recipe change adds, on the same held-out frames: `--versus OTHER_EVAL` appends OTHER minus the
first folder, per measure, with a paired cluster-bootstrap interval (both models' scores of a frame
stay together when identity groups are resampled).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from deepfake_detection.evaluate.metrics import expected_calibration_error, roc_auc

Stat = Callable[[pd.DataFrame], float]
FFPP_FRAMES = ("ffpp_crops", "ffpp_c23")  # c23 material; c40 is reported on its own
REAL_PHOTOS = ("aaf_real", "utk_real")
MIN_GROUPS = 5  # below this many identity groups no interval is reported
DEGRADATIONS = (("jpeg50", "JPEG 50"), ("blur1", "blur sigma 1"), ("down0.5", "downscale x0.5"))


def cluster_bootstrap(df: pd.DataFrame, stat: Stat, by: str, n: int = 1000, seed: int = 0
                      ) -> tuple[float, float, float]:
    """(value, low, high): the statistic and its 95% percentile interval, resampling whole `by` groups
    (frames of one person are not independent). Resamples where the statistic is undefined are skipped.
    With fewer than MIN_GROUPS groups a percentile interval means nothing: (value, nan, nan)."""
    rng = np.random.default_rng(seed)
    df = df.reset_index(drop=True)
    members = list(df.groupby(by, sort=True).indices.values())
    try:
        value = stat(df)
    except ValueError:  # no data of this kind in this fold, or a single class
        return np.nan, np.nan, np.nan
    if len(members) < MIN_GROUPS:
        return value, np.nan, np.nan
    values = []
    for _ in range(n):
        picked = rng.integers(0, len(members), len(members))
        sample = df.take(np.concatenate([members[i] for i in picked]))
        try:
            v = stat(sample)
        except ValueError:  # a resample that lost a class
            continue
        if v is not None and np.isfinite(v):
            values.append(v)
    low, high = np.quantile(values, [0.025, 0.975]) if values else (np.nan, np.nan)
    return value, float(low), float(high)


def _auc(df: pd.DataFrame) -> float:
    return roc_auc(df["label"], df["score"])


def _ece(df: pd.DataFrame) -> float:
    return expected_calibration_error(df["score"], df["label"])[0]


def _rate(threshold: float) -> Stat:
    return lambda d: float((d["score"] >= threshold).mean())


def _drop(name: str) -> Stat:
    return lambda d: roc_auc(d["label"], d["score"]) - roc_auc(d["label"], d[f"score_{name}"])


def report(eval_dirs: list[Path], lomo: Path | None) -> str:
    first = eval_dirs[0]
    scores = pd.read_csv(first / "scores.csv")
    videos = pd.read_csv(first / "videos.csv")
    metrics = json.loads((first / "metrics.json").read_text())
    threshold = float(metrics["threshold"])
    ffpp = scores[scores["dataset"].isin(FFPP_FRAMES)]
    c40 = scores[scores["dataset"] == "ffpp_c40"]
    gan = scores[scores["dataset"] == "gan_faces"]
    photos = scores[scores["dataset"].isin(REAL_PHOTOS)]
    ff_fakes = scores[scores["dataset"].str.startswith("ffpp") & (scores["label"] == 1)]
    c23_videos = videos[videos["dataset"] == "ffpp_c23"]
    rows: list[tuple[str, tuple[float, float, float] | float, str]] = [
        ("FF++ c23 held-out identities, frame AUC", cluster_bootstrap(ffpp, _auc, "group"), ">= 0.95"),
        ("FF++ c23 held-out identities, video AUC (dfd detect verdicts)",
         cluster_bootstrap(c23_videos, _auc, "group"), ">= 0.98"),
        ("FF++ c40 clips of held-out identities, frame AUC", cluster_bootstrap(c40, _auc, "group"),
         ">= 0.85"),
        ("gan_faces held out, AUC", cluster_bootstrap(gan, _auc, "group"), ">= 0.95"),
    ]
    for name in REAL_PHOTOS:
        part = photos[photos["dataset"] == name]
        rows.append((f"{name} held-out reals, FPR at the threshold",
                     cluster_bootstrap(part, _rate(threshold), "group"), "<= 0.05"))
    rows.append(("FF++ fakes (c23 + c40), recall at the threshold",
                 cluster_bootstrap(ff_fakes, _rate(threshold), "group"), "reported"))
    rows.append(("ECE, all test frames", cluster_bootstrap(scores, _ece, "group"), "<= 0.05"))
    for name, label in DEGRADATIONS:
        if f"score_{name}" in scores:
            rows.append((f"AUC drop under {label}, all test frames",
                         cluster_bootstrap(scores, _drop(name), "group"), "<= 0.05"))
    reals = ffpp[ffpp["label"] == 0]
    for method in sorted(set(ffpp.loc[ffpp["label"] == 1, "method"])):
        both = pd.concat([ffpp[ffpp["method"] == method], reals])
        rows.append((f"FF++ {method} vs FF++ reals, frame AUC", cluster_bootstrap(both, _auc, "group"),
                     "reported"))
    fold_aucs = []
    for folder in eval_dirs:
        s = scores if folder == first else pd.read_csv(folder / "scores.csv")
        fold_aucs.append(_auc(s[s["dataset"].isin(FFPP_FRAMES)]))
    rows.append((f"FF++ frame AUC, mean over {len(fold_aucs)} fold(s) "
                 f"({', '.join(f'{a:.3f}' for a in fold_aucs)})", float(np.mean(fold_aucs)), ">= 0.95"))
    if lomo is not None:
        for method, r in json.loads(lomo.read_text()).items():
            if method == "mean":
                rows.append(("Leave-one-method-out, mean AUC", float(r["auc"]), ">= 0.85"))
            else:
                rows.append((f"LOMO: {method} held out, AUC", (r["auc"], r["auc_lo"], r["auc_hi"]),
                             "reported"))
    lines = [f"Threshold {threshold:.3f}; 95% intervals: cluster bootstrap over identity groups, 1000 "
             f"resamples; {len(scores)} test frames, {len(videos)} video verdicts "
             f"({metrics['data'].get('mode', '')}).", "",
             "| measure | value [95% CI] | bar |", "| --- | --- | --- |"]
    for name, value, bar in rows:
        if not isinstance(value, tuple):
            shown = f"{value:.3f}"
        elif np.isnan(value[0]):
            shown = "n/a (no such test data in this fold)"
        elif np.isnan(value[1]):
            shown = f"{value[0]:.3f} (no interval: fewer than {MIN_GROUPS} identity groups)"
        else:
            shown = f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]"
        lines.append(f"| {name} | {shown} | {bar} |")
    return "\n".join(lines) + "\n"


def _of_other(stat: Stat) -> Stat:
    """`stat` on the other model's columns of a merged frame (`score_other` -> `score`, ...)."""
    return lambda d: stat(d.assign(**{c.removesuffix("_other"): d[c] for c in d.columns
                                      if c.endswith("_other")}))


def compare(base: Path, other: Path) -> str:
    key = ["source_id", "frame_index"]
    a, b = pd.read_csv(base / "scores.csv"), pd.read_csv(other / "scores.csv")
    both = a.merge(b.drop(columns=["dataset", "group", "label", "method"], errors="ignore"), on=key,
                   suffixes=("", "_other"))
    if len(both) < 0.95 * max(len(a), len(b)):
        raise SystemExit(f"{base} and {other} share {len(both)} of {len(a)}/{len(b)} frames: "
                         "not one test split")
    parts = {"FF++ c23 frame AUC": (FFPP_FRAMES, _auc), "FF++ c40 frame AUC": (("ffpp_c40",), _auc),
             "gan_faces AUC": (("gan_faces",), _auc), "ECE, all test frames": (None, _ece)}
    for name, label in DEGRADATIONS:
        if f"score_{name}" in a and f"score_{name}" in b:
            parts[f"AUC drop under {label}"] = (None, _drop(name))
    lines = [f"`{other.name}` against `{base.name}` on the same {len(both)} test frames (paired cluster "
             "bootstrap over identity groups, 1000 resamples):", "",
             f"| measure | {base.name} | {other.name} | difference [95% CI] |", "| --- | --- | --- | --- |"]
    for measure, (datasets, stat) in parts.items():
        rows = both if datasets is None else both[both["dataset"].isin(datasets)]
        if rows.empty:
            continue
        diff, low, high = cluster_bootstrap(rows, lambda d, f=stat: _of_other(f)(d) - f(d), "group")
        interval = "" if np.isnan(low) else f" [{low:+.3f}, {high:+.3f}]"
        values = f"{stat(rows):.3f} | {_of_other(stat)(rows):.3f}"
        lines.append(f"| {measure} | {values} | {diff:+.3f}{interval} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("eval_dirs", type=Path, nargs="+", help="`dfd evaluate` output folders, fold 0 first")
    parser.add_argument("--lomo", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--versus", type=Path, help="another model's evaluation of the first folder's split")
    args = parser.parse_args()
    text = report(args.eval_dirs, args.lomo)
    if args.versus:
        text += "\n" + compare(args.eval_dirs[0], args.versus)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
