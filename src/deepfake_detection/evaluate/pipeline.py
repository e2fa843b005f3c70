"""From scored crops to the ``results`` dict of ``report.py``, and its standard figures.

``evaluate_predictions`` takes the evaluation manifest with a ``score`` column (calibrated fake
probability per crop; columns ``label``, ``source_id`` and optionally ``method``, ``dataset``) and
returns the metrics part of ``results``; ``make_plots`` draws the figures and returns their paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from deepfake_detection.evaluate import plots
from deepfake_detection.evaluate.metrics import bootstrap_auc_ci, breakdown, summarize, video_level

__all__ = ["evaluate_level", "evaluate_predictions", "make_plots"]


def evaluate_level(
    labels: Any, scores: Any, threshold: float, *, groups: Any = None, n_boot: int = 1000, seed: int = 0,
    cluster_name: str = "source_id",
) -> dict[str, Any]:
    """``{"at_threshold", "at_0.5", "auc_ci", "ci_method"}`` for one level (frames or videos)."""
    at_thr = summarize(labels, scores, threshold)
    ci = None
    if n_boot > 0 and at_thr["auc"] is not None:
        ci = list(bootstrap_auc_ci(labels, scores, groups=groups, n=n_boot, seed=seed))
    method = f"cluster bootstrap over {cluster_name}" if groups is not None else "bootstrap over samples"
    return {"at_threshold": at_thr, "at_0.5": summarize(labels, scores, 0.5), "auc_ci": ci,
            "ci_method": f"95% percentile {method}, n={n_boot}" if ci else None}


def evaluate_predictions(
    df: pd.DataFrame,
    *,
    threshold: float,
    temperature: float = 1.0,
    bias: float = 0.0,
    model: Mapping[str, Any] | None = None,
    score_col: str = "score",
    n_boot: int = 1000,
    seed: int = 0,
    cluster_col: str = "source_id",
) -> dict[str, Any]:
    """Frame and video metrics, per method and per dataset, in the ``report.py`` layout.

    Frame-level CIs resample whole clusters (`cluster_col`: sources, or identity groups, which are
    stricter: frames of one person are not independent); video-level CIs resample videos.
    ``threshold``, ``temperature`` and ``bias`` must come from validation data, never from ``df``.
    """
    groups = df["source_id"].to_numpy() if "source_id" in df.columns else None
    if cluster_col not in df.columns:
        cluster_col = "source_id"
    clusters = df[cluster_col].to_numpy() if cluster_col in df.columns else None
    results: dict[str, Any] = {
        "model": dict(model or {}),
        "threshold": float(threshold),
        "temperature": float(temperature),
        "bias": float(bias),
        "frame": evaluate_level(df["label"], df[score_col], threshold, groups=clusters, n_boot=n_boot,
                                seed=seed, cluster_name=cluster_col),
        "video": None,
        "per_method": {},
        "per_dataset": {},
        "robustness": None,
        "plots": {},
    }
    video = video_level(df, score_col) if groups is not None else None
    if video is not None:
        results["video"] = evaluate_level(video["label"], video[score_col], threshold, n_boot=n_boot,
                                          seed=seed)
    for col, key in (("method", "per_method"), ("dataset", "per_dataset")):
        if col not in df.columns:
            continue
        # per-method and per-dataset intervals resample the same clusters as the overall one
        results[key]["frame"] = breakdown(df, col, score_col=score_col, threshold=threshold,
                                          n_boot=n_boot, seed=seed, group_col=cluster_col)
        if video is not None and col in video.columns:
            results[key]["video"] = breakdown(video, col, score_col=score_col, threshold=threshold,
                                              group_col=None)
    return results


def make_plots(df: pd.DataFrame, results: Mapping[str, Any], out_dir: str | Path, *,
               score_col: str = "score") -> dict[str, Path]:
    """ROC (frame vs video, and per method), PR, reliability, score histogram and confusion matrix."""
    out = Path(out_dir)
    thr = float(results["threshold"])
    y, s = df["label"].to_numpy(), df[score_col].to_numpy()
    series: dict[str, tuple[Any, Any]] = {"frame": (y, s)}
    if "source_id" in df.columns:
        video = video_level(df, score_col)
        series["video (mean of frames)"] = (video["label"].to_numpy(), video[score_col].to_numpy())
    paths: dict[str, Path] = {}
    both = 0 < y.sum() < y.size
    if both:
        paths["roc"] = plots.plot_roc(series, out / "roc.png", title="ROC: frame vs video")
        paths["pr"] = plots.plot_pr(series, out / "pr.png")
    if both and "method" in df.columns:
        reals = df[df["label"] == 0]
        per_method: dict[str, tuple[Any, Any]] = {}
        for m, rows in df[df["label"] == 1].groupby("method", sort=True):
            both_classes = pd.concat([rows, reals])  # DeepfakeBench: a method's fakes vs all reals
            per_method[str(m)] = (both_classes["label"].to_numpy(), both_classes[score_col].to_numpy())
        if per_method:
            paths["roc_per_method"] = plots.plot_roc(per_method, out / "roc_per_method.png",
                                                     title="ROC per method (vs all reals)")
    paths["reliability"] = plots.plot_reliability(s, y, out / "reliability.png")
    paths["score_hist"] = plots.plot_score_hist(y, s, thr, out / "score_hist.png")
    paths["confusion"] = plots.plot_confusion(y, s, thr, out / "confusion.png")
    return paths
