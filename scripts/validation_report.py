"""The default-model validation table: every figure the default-model issue asks for, with cluster-bootstrap
95% intervals, next to its bar.

Inputs: the `dfd evaluate` folder of the model on the main manifest's test split (scores.csv,
metrics.json), a manifest of extra held-out reals (All-Age-Faces, scored here), and optionally the
`lomo.json` of scripts/leave_one_method_out.py.

    .venv/bin/python scripts/validation_report.py models/default.onnx work/eval \
        work/prepaaf/manifest.parquet --lomo work/lomo/lomo.json --out work/validation.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from deepfake_detection.data.manifest import read_manifest
from deepfake_detection.evaluate.metrics import expected_calibration_error, roc_auc, video_level
from deepfake_detection.evaluate.run import score_manifest
from deepfake_detection.infer.backends import load_backend

Stat = Callable[[pd.DataFrame], float]


def cluster_bootstrap(df: pd.DataFrame, stat: Stat, by: str, n: int = 1000, seed: int = 0
                      ) -> tuple[float, float, float]:
    """(value, low, high): the statistic and its 95% percentile interval, resampling whole `by` groups
    (frames of one video are not independent). Resamples where the statistic is undefined are skipped."""
    rng = np.random.default_rng(seed)
    groups = [g for _, g in df.groupby(by, sort=True)]
    values = []
    for _ in range(n):
        sample = pd.concat([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        try:
            v = stat(sample)
        except ValueError:  # a resample that lost a class
            continue
        if np.isfinite(v):
            values.append(v)
    low, high = np.quantile(values, [0.025, 0.975])
    return stat(df), float(low), float(high)


def _auc(df: pd.DataFrame) -> float:
    return roc_auc(df["label"], df["score"])


def _video_auc(df: pd.DataFrame) -> float:
    return _auc(video_level(df))


def _ece(df: pd.DataFrame) -> float:
    return expected_calibration_error(df["score"], df["label"])[0]


def report(model: Path, eval_dir: Path, extra_reals: Path, lomo: Path | None) -> str:
    scores = pd.read_csv(eval_dir / "scores.csv")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    threshold = float(metrics["threshold"])
    backend = load_backend(model)
    aaf = read_manifest(extra_reals)
    aaf = aaf[aaf["split"] == "test"]
    aaf, _ = score_manifest(backend, aaf, extra_reals.resolve().parent)

    ffpp = scores[scores["dataset"] == "ffpp"]
    gan = scores[scores["dataset"] != "ffpp"]
    ff_fakes = ffpp[ffpp["label"] == 1]
    rows: list[tuple[str, tuple[float, float, float] | float, str]] = [
        ("FF++ held-out groups, frame AUC", cluster_bootstrap(ffpp, _auc, "source_id"), ">= 0.95"),
        ("FF++ held-out groups, video AUC", cluster_bootstrap(ffpp, _video_auc, "source_id"), ">= 0.98"),
        ("gan_faces held-out part, AUC", cluster_bootstrap(gan, _auc, "source_id"), ">= 0.95"),
        ("All-Age-Faces held-out reals, FPR at the threshold",
         cluster_bootstrap(aaf, lambda d: float((d["score"] >= threshold).mean()), "source_id"), "<= 0.05"),
        ("FF++ fakes, recall at the threshold",
         cluster_bootstrap(ff_fakes, lambda d: float((d["score"] >= threshold).mean()), "source_id"),
         "reported"),
        ("ECE after temperature scaling, all test crops", cluster_bootstrap(scores, _ece, "source_id"),
         "<= 0.05"),
    ]
    robustness = metrics.get("robustness", {}).get("perturbations", {})
    for name, label in (("jpeg50", "JPEG 50"), ("blur1", "blur sigma 1"), ("blur2", "blur sigma 2"),
                        ("down0.5", "downscale x0.5")):
        if name in robustness:
            rows.append((f"AUC drop under {label}", float(robustness[name]["auc_drop"]), "<= 0.05"))
    if lomo is not None:
        for method, r in json.loads(lomo.read_text()).items():
            if method == "mean":
                rows.append(("Leave-one-method-out, mean AUC", float(r["auc"]), ">= 0.85"))
            else:
                rows.append((f"LOMO: {method} held out, AUC", (r["auc"], r["auc_lo"], r["auc_hi"]),
                             "reported"))
    lines = [f"Threshold {threshold:.3f}; 95% intervals: cluster bootstrap over source videos/images, 1000 "
             "resamples.", "", "| measure | value [95% CI] | bar |", "| --- | --- | --- |"]
    for name, value, bar in rows:
        shown = (f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]" if isinstance(value, tuple)
                 else f"{value:.3f}")
        lines.append(f"| {name} | {shown} | {bar} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("eval_dir", type=Path, help="`dfd evaluate` output folder (test split)")
    parser.add_argument("extra_reals", type=Path, help="manifest of held-out reals (its test split)")
    parser.add_argument("--lomo", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = report(args.model, args.eval_dir, args.extra_reals, args.lomo)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
