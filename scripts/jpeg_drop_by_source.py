"""Which sources make up a model's AUC drop under JPEG? From a `dfd evaluate` (or archived) folder.

    .venv/bin/python scripts/jpeg_drop_by_source.py models/evaluations/soup3_fold4 [--perturbation jpeg50]

Reads scores.csv (the product path's frame scores, clean and perturbed) and prints, per dataset and
label, the mean change of p(fake) under the perturbation, and the pooled AUC lost when only that
dataset's frames are perturbed (the others kept clean): the share of the measured drop each source
carries. Diagnosis only; no model is run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from deepfake_detection.evaluate.metrics import roc_auc


def drop_by_source(scores: pd.DataFrame, perturbation: str) -> tuple[pd.DataFrame, dict[str, float]]:
    """(mean score change per dataset and label, pooled AUC lost by perturbing one dataset alone)."""
    column = f"score_{perturbation}"
    if column not in scores.columns:
        raise KeyError(f"no {column!r} column: evaluate with that robustness perturbation")
    shift = (scores[column] - scores["score"]).groupby([scores["dataset"], scores["label"]])
    shifts = shift.agg(["mean", "count"]).reset_index()
    clean = roc_auc(scores["label"], scores["score"])
    lost = {str(ds): clean - roc_auc(scores["label"], np.where(scores["dataset"] == ds, scores[column],
                                                                  scores["score"]))
            for ds in sorted(scores["dataset"].unique())}
    return shifts, lost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("evaluation", type=Path, help="a dfd evaluate output folder (with scores.csv)")
    parser.add_argument("--perturbation", default="jpeg50", help="the scores.csv column suffix")
    args = parser.parse_args(argv)
    try:
        scores = pd.read_csv(args.evaluation / "scores.csv")
        shifts, lost = drop_by_source(scores, args.perturbation)
    except (OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    column = f"score_{args.perturbation}"
    total = roc_auc(scores["label"], scores["score"]) - roc_auc(scores["label"], scores[column])
    print(f"pooled AUC drop under {args.perturbation}: {total:.3f} ({len(scores)} frames)")
    print("mean change of p(fake), by dataset and label:")
    print(shifts.round(3).to_string(index=False))
    print("pooled AUC lost when only this dataset is perturbed:")
    for ds, value in lost.items():
        print(f"  {ds:20s} {value:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
