"""Benchmark the vectorised bootstrap AUC interval against the plain per-resample loop.

`dfd evaluate` reports every AUC with a 1,000-resample bootstrap interval, often over 20,000+ frames
and for each method, dataset and perturbation, so the interval must take well under the 2 s budget.
Prints seconds per call of `bootstrap_auc_ci` (frames resampled, and whole groups resampled) and of
the plain approach (resample indices, call scikit-learn's `roc_auc_score` each time; timed on fewer
resamples and scaled), and both intervals, which should agree to about 0.001.

    .venv/bin/python benchmarks/bench_metrics.py [--frames 20000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from deepfake_detection.evaluate.metrics import bootstrap_auc_ci

BUDGET_S = 2.0


def plain_bootstrap(y: np.ndarray, s: np.ndarray, n: int, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n):
        idx = rng.integers(0, y.size, y.size)
        if 0 < y[idx].sum() < y.size:
            aucs.append(roc_auc_score(y[idx], s[idx]))
    low, high = np.quantile(aucs, [0.025, 0.975])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, args.frames)
    s = rng.random(y.size) + 0.3 * y
    groups = rng.integers(0, max(2, args.frames // 8), y.size)  # about 8 frames per video

    start = time.perf_counter()
    ci = bootstrap_auc_ci(y, s, n=args.resamples)
    frames_s = time.perf_counter() - start
    start = time.perf_counter()
    bootstrap_auc_ci(y, s, groups=groups, n=args.resamples)
    groups_s = time.perf_counter() - start
    plain_n = max(1, args.resamples // 10)
    start = time.perf_counter()
    plain_ci = plain_bootstrap(y, s, plain_n)
    plain_s = (time.perf_counter() - start) * args.resamples / plain_n

    print(f"{args.frames} scores, {args.resamples} resamples (budget {BUDGET_S:.1f} s)")
    print(f"  bootstrap_auc_ci, frames resampled   {frames_s:7.2f} s   interval [{ci[0]:.4f}, {ci[1]:.4f}]")
    print(f"  bootstrap_auc_ci, groups resampled   {groups_s:7.2f} s")
    print(f"  plain sklearn loop (from {plain_n}, scaled) {plain_s:7.2f} s   "
          f"interval [{plain_ci[0]:.4f}, {plain_ci[1]:.4f}]")
    within = frames_s <= BUDGET_S and groups_s <= BUDGET_S
    print(f"  speed-up {plain_s / frames_s:.1f}x; within budget: {within}")


if __name__ == "__main__":
    main()
