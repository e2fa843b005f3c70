"""Evaluation figures as PNG files, each written atomically (temporary file, then os.replace).

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly: no pyplot global
state, so this works headless, in threads, and never changes the caller's backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from deepfake_detection.evaluate.metrics import (
    _labels_scores,
    average_precision,
    binary_metrics,
    expected_calibration_error,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)
from deepfake_detection.io.atomic import atomic_path

__all__ = [
    "plot_auc_vs_latency",
    "plot_confusion",
    "plot_pr",
    "plot_reliability",
    "plot_roc",
    "plot_score_hist",
]

# A series is (labels, scores); several named series share one plot (frame vs video, per method).
Series = Mapping[str, tuple[ArrayLike, ArrayLike]]


def _new_figure(size: tuple[float, float] = (5.0, 4.5)) -> Figure:
    fig = Figure(figsize=size, dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    with atomic_path(target, suffix=".png") as tmp:
        fig.tight_layout()
        fig.savefig(tmp, format="png")
    return target


def plot_confusion(labels: ArrayLike, probs: ArrayLike, threshold: float, path: str | os.PathLike[str],
                   *, title: str = "Confusion matrix") -> Path:
    """Counts and row-normalised rates (rows: true class) at ``threshold``."""
    m = binary_metrics(labels, probs, threshold)
    counts = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]], dtype=np.float64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig = _new_figure((4.5, 4.0))
    ax = fig.add_subplot()
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{int(counts[i, j])}\n{rates[i, j]:.1%}", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks([0, 1], ["real", "fake"])
    ax.set_yticks([0, 1], ["real", "fake"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (threshold {threshold:.3g})")
    return _save(fig, path)


def plot_roc(series: Series, path: str | os.PathLike[str], *, title: str = "ROC") -> Path:
    """One ROC curve per named series, AUC in the legend, chance diagonal for reference."""
    fig = _new_figure()
    ax = fig.add_subplot()
    for name, (labels, scores) in series.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (reals flagged)",
           ylabel="true positive rate (fakes caught)", title=title)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_pr(series: Series, path: str | os.PathLike[str], *, title: str = "Precision-recall") -> Path:
    """One precision-recall curve (steps) per named series, AP in the legend."""
    fig = _new_figure()
    ax = fig.add_subplot()
    for name, (labels, scores) in series.items():
        precision, recall, _ = precision_recall_curve(labels, scores)
        ax.step(recall, precision, where="post", lw=1.5,
                label=f"{name} (AP {average_precision(labels, scores):.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (fake)", ylabel="precision (fake)", title=title)
    ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_reliability(probs: ArrayLike, labels: ArrayLike, path: str | os.PathLike[str], *,
                     n_bins: int = 15, title: str = "Reliability") -> Path:
    """Observed fake fraction per probability bin against the diagonal; bar widths are the bins."""
    ece, table = expected_calibration_error(probs, labels, n_bins)
    rows = [r for r in table if r["count"]]
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.bar([r["lower"] for r in rows], [r["frac_fake"] for r in rows], width=1 / n_bins, align="edge",
           edgecolor="black", alpha=0.7, label="observed fake fraction")
    ax.plot([r["mean_prob"] for r in rows], [r["frac_fake"] for r in rows], "o", ms=3, color="black",
            label="bin mean probability")
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=0.8, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted fake probability", ylabel="fraction fake",
           title=f"{title} (ECE {ece:.3f})")
    ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def plot_score_hist(labels: ArrayLike, probs: ArrayLike, threshold: float, path: str | os.PathLike[str],
                    *, bins: int = 40, title: str = "Score distribution") -> Path:
    """Density histograms of the scores of reals and fakes, with the decision threshold."""
    y, p = _labels_scores(labels, probs)
    lo, hi = float(min(p.min(), threshold)), float(max(p.max(), threshold))
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    fig = _new_figure((5.5, 4.0))
    ax = fig.add_subplot()
    for mask, name, color in ((~y, "real", "tab:blue"), (y, "fake", "tab:red")):
        if mask.any():
            ax.hist(p[mask], bins=list(edges), density=True, alpha=0.5, color=color,
                    label=f"{name} (n={mask.sum()})")
    ax.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.3g}")
    ax.set(xlabel="fake probability", ylabel="density", title=title)
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_auc_vs_latency(runs: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *,
                        title: str = "AUC vs latency (batch 1)") -> Path:
    """Scatter of each run's AUC against its batch-1 latency (log scale), points labelled by name."""
    fig = _new_figure((6.0, 4.5))
    ax = fig.add_subplot()
    shown = [r for r in runs if r.get("auc") is not None and r.get("latency_ms_b1") is not None]
    for r in shown:
        ax.scatter(r["latency_ms_b1"], r["auc"], s=30)
        ax.annotate(str(r.get("name", "?")), (r["latency_ms_b1"], r["auc"]), fontsize="small",
                    xytext=(4, 4), textcoords="offset points")
    if shown and all(r["latency_ms_b1"] > 0 for r in shown):
        ax.set_xscale("log")
    ax.set(xlabel="latency, batch 1 (ms)", ylabel="AUC", title=title)
    ax.grid(alpha=0.3)
    return _save(fig, path)
