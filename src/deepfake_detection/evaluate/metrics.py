"""Binary detection metrics in plain NumPy/SciPy (no scikit-learn at run time).

Conventions, the ones DeepfakeBench reports: label 1 = fake (the positive class), a higher score means
"more fake", and a sample is called fake when ``score >= threshold``. Ranking metrics (AUC, AP, EER)
use the raw scores; ties count half in the AUC, as in scikit-learn. ``roc_curve`` and
``precision_recall_curve`` keep every distinct threshold (scikit-learn's ``drop_intermediate=False``).

Frame-level metrics treat every crop as a sample; ``video_level`` averages the frame scores of each
source (video or image) first, the "video AUC" of DeepfakeBench. Frames of one video are not
independent, so confidence intervals should resample whole videos (``bootstrap_auc_ci(groups=...)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

__all__ = [
    "average_precision",
    "binary_metrics",
    "bootstrap_auc_ci",
    "breakdown",
    "eer",
    "expected_calibration_error",
    "log_loss",
    "precision_recall_curve",
    "roc_auc",
    "roc_curve",
    "summarize",
    "video_level",
    "within_source_auc",
]


def _labels_scores(labels: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.bool_], FloatArray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if y.size == 0:
        raise ValueError("no samples")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return y.astype(bool), s


def _require_both_classes(y: NDArray[np.bool_], what: str) -> None:
    if y.all() or not y.any():
        raise ValueError(f"{what} needs both real (0) and fake (1) samples; only one class present")


def _clf_curve(y: NDArray[np.bool_], s: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Cumulative false and true positives at each distinct score, highest score first."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # The last index of each run of equal scores: tied samples cross the threshold together.
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1) - tps
    return fps, tps, s[last]


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(fpr, tpr, thresholds), starting at (0, 0) with threshold +inf as scikit-learn does."""
    y, s = _labels_scores(labels, scores)
    _require_both_classes(y, "roc_curve")
    fps, tps, thr = _clf_curve(y, s)
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return fpr, tpr, np.r_[np.inf, thr]


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (trapezoidal, so a tie between a real and a fake counts 1/2)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def within_source_auc(labels: ArrayLike, scores: ArrayLike, sources: ArrayLike) -> float:
    """AUC over the (fake, real) pairs from the same source only: the chance that a fake ranks above a
    real of its own dataset, i.e. the per-source AUCs weighted by their pair counts. Unlike the pooled
    AUC it gives nothing for telling one dataset's fakes from another's reals (a format shortcut).
    ValueError when no source holds both classes."""
    y, s = _labels_scores(labels, scores)
    src = np.asarray(sources)
    total = pairs = 0.0
    for name in pd.unique(src):
        mine = src == name
        n_fake, n_real = int(y[mine].sum()), int((~y[mine]).sum())
        if n_fake and n_real:
            total += roc_auc(y[mine], s[mine]) * n_fake * n_real
            pairs += n_fake * n_real
    if not pairs:
        raise ValueError("no source holds both real and fake samples")
    return total / pairs


def precision_recall_curve(
    labels: ArrayLike, scores: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(precision, recall, thresholds) in increasing threshold order, ending at (1, 0): scikit-learn's."""
    y, s = _labels_scores(labels, scores)
    if not y.any():
        raise ValueError("precision_recall_curve needs at least one fake (1) sample")
    fps, tps, thr = _clf_curve(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thr[::-1]


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """Step-wise AP = sum_n (R_n - R_{n-1}) P_n, no interpolation (scikit-learn's definition)."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def eer(labels: ArrayLike, scores: ArrayLike) -> float:
    """Equal error rate: where FPR = FNR on the ROC curve, interpolated linearly between ROC points.

    A segment between two ROC points is reachable by randomising between the two thresholds, so the
    linear interpolation is exact for that family of classifiers.
    """
    fpr, tpr, _ = roc_curve(labels, scores)
    diff = (1.0 - tpr) - fpr  # FNR - FPR: starts at 1, ends at -1, non-increasing
    k = int(np.flatnonzero(diff <= 0)[0])
    if diff[k] == 0 or k == 0:
        return float(fpr[k])
    t = diff[k - 1] / (diff[k - 1] - diff[k])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


def log_loss(labels: ArrayLike, probs: ArrayLike, eps: float | None = None) -> float:
    """Mean binary cross-entropy; probabilities clipped to [eps, 1 - eps] (machine epsilon by default,
    as scikit-learn) so that one confident mistake gives a large but finite loss."""
    y, p = _labels_scores(labels, probs)
    e = float(np.finfo(np.float64).eps) if eps is None else eps
    p = np.clip(p, e, 1.0 - e)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def expected_calibration_error(
    probs: ArrayLike, labels: ArrayLike, n_bins: int = 15
) -> tuple[float, list[dict[str, Any]]]:
    """ECE of the fake probability with equal-width bins, and the reliability table.

    ECE = sum_b (n_b / N) |frac_fake_b - mean_prob_b|: the calibration of P(fake), the number users
    read, rather than of the top-class confidence. Bin b holds probabilities in [b/B, (b+1)/B); the
    last bin includes 1. Rows of the table: ``lower, upper, count, mean_prob, frac_fake, gap``
    (mean_prob, frac_fake and gap are None for empty bins).
    """
    y, p = _labels_scores(labels, probs)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must lie in [0, 1]")
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y.astype(np.float64), minlength=n_bins)
    ece = 0.0
    table: list[dict[str, Any]] = []
    for b in range(n_bins):
        row: dict[str, Any] = {"lower": b / n_bins, "upper": (b + 1) / n_bins, "count": int(count[b]),
                               "mean_prob": None, "frac_fake": None, "gap": None}
        if count[b]:
            mean_p, frac = sum_p[b] / count[b], sum_y[b] / count[b]
            row.update(mean_prob=float(mean_p), frac_fake=float(frac), gap=float(frac - mean_p))
            ece += count[b] / y.size * abs(frac - mean_p)
        table.append(row)
    return float(ece), table


def _ratio(num: float, den: float) -> float | None:
    # Undefined rates are None (JSON null), never a silent 0.
    return num / den if den else None


def binary_metrics(labels: ArrayLike, probs: ArrayLike, threshold: float) -> dict[str, Any]:
    """Metrics of the hard decision ``prob >= threshold`` (fake = positive class).

    Keys: threshold, n, n_real, n_fake, tp, fp, tn, fn, accuracy, balanced_accuracy, precision,
    recall (= TPR, fakes caught), specificity (= TNR, reals passed), fpr, fnr, f1. A rate whose
    denominator is zero is None.
    """
    y, p = _labels_scores(labels, probs)
    pred = p >= threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    tn = int(np.sum(~pred & ~y))
    recall, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    balanced = (recall + spec) / 2 if recall is not None and spec is not None else None
    return {
        "threshold": float(threshold), "n": int(y.size), "n_real": tn + fp, "n_fake": tp + fn,
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "accuracy": (tp + tn) / y.size,
        "balanced_accuracy": balanced,
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "specificity": spec,
        "fpr": _ratio(fp, fp + tn),
        "fnr": _ratio(fn, fn + tp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def summarize(labels: ArrayLike, probs: ArrayLike, threshold: float, *, n_bins: int = 15) -> dict[str, Any]:
    """``binary_metrics`` plus auc, ap, eer, log_loss, ece and ``notes``.

    With a single class present the ranking metrics (auc, ap, eer) are None and a note says why;
    accuracy, log-loss and ECE stay defined (e.g. a real-only set still has a false-positive rate).
    """
    y, p = _labels_scores(labels, probs)
    out = binary_metrics(y, p, threshold)
    notes: list[str] = []
    if y.all() or not y.any():
        only = "fake" if y.all() else "real"
        notes.append(f"only {only} samples: AUC, AP and EER are undefined")
        out.update(auc=None, ap=None, eer=None)
    else:
        out.update(auc=roc_auc(y, p), ap=average_precision(y, p), eer=eer(y, p))
    if (p >= 0).all() and (p <= 1).all():
        out["log_loss"] = log_loss(y, p)
        out["ece"] = expected_calibration_error(p, y, n_bins)[0]
    else:
        notes.append("scores are not probabilities: log-loss and ECE skipped")
        out.update(log_loss=None, ece=None)
    out["notes"] = notes
    return out


def video_level(
    df: pd.DataFrame,
    score_col: str = "score",
    by: str = "source_id",
    *,
    label_col: str = "label",
    keep: Sequence[str] = ("method", "dataset", "group"),
) -> pd.DataFrame:
    """One row per source: the mean of its frame scores (DeepfakeBench's video score).

    Columns: ``by``, ``score_col`` (the mean), ``label_col``, ``n_frames`` and those of ``keep``
    present in ``df`` (first value per source). Raises ValueError when a source mixes labels: that
    is a manifest bug, and averaging would hide it.
    """
    missing = [c for c in (by, score_col, label_col) if c not in df.columns]
    if missing:
        raise ValueError(f"missing columns: {missing}")
    grouped = df.groupby(by, sort=True, dropna=False)
    n_labels = grouped[label_col].nunique(dropna=False)
    mixed = n_labels[n_labels > 1]
    if len(mixed):
        shown = ", ".join(map(str, mixed.index[:5]))
        raise ValueError(f"{len(mixed)} source(s) mix real and fake frames: {shown}")
    out = pd.DataFrame({
        score_col: grouped[score_col].mean(),
        label_col: grouped[label_col].first(),
        "n_frames": grouped.size(),
    })
    for col in keep:
        if col in df.columns and col not in out.columns:
            out[col] = grouped[col].first()
    return out.reset_index()


def _bootstrap_aucs(
    y: NDArray[np.bool_], s: FloatArray, groups: NDArray[np.int64], n: int, rng: np.random.Generator
) -> FloatArray:
    """AUC of ``n`` (cluster) bootstrap resamples without re-sorting.

    A resample is a vector of group multiplicities; each sample inherits its group's weight. With the
    samples sorted by score once, the weighted real/fake counts per distinct score are one
    ``reduceat`` per chunk, and the AUC follows from cumulative sums (ties count 1/2).
    """
    order = np.argsort(s, kind="mergesort")
    s, y, groups = s[order], y[order], groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]  # first index of each distinct score
    n_groups = int(groups.max()) + 1
    fake = y.astype(np.float64)
    aucs = np.empty(n)
    chunk = max(1, min(n, 4_000_000 // max(n_groups, y.size)))  # ~32 MB per matrix
    for first in range(0, n, chunk):
        m = min(chunk, n - first)
        draws = rng.integers(0, n_groups, size=(m, n_groups))
        counts = np.bincount((draws + np.arange(m)[:, None] * n_groups).ravel(), minlength=m * n_groups)
        weights = counts.reshape(m, n_groups).astype(np.float64)[:, groups]  # (m, samples)
        pos = np.add.reduceat(weights * fake, starts, axis=1)
        neg = np.add.reduceat(weights, starts, axis=1) - pos
        neg_below = np.cumsum(neg, axis=1) - neg
        with np.errstate(invalid="ignore", divide="ignore"):
            aucs[first:first + m] = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (neg.sum(1) * pos.sum(1))
    return aucs


def bootstrap_auc_ci(
    labels: ArrayLike,
    scores: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of the ROC AUC.

    With ``groups`` (e.g. the source video of each frame) whole groups are resampled with replacement
    (cluster bootstrap): frames of one video are correlated, and resampling frames alone gives
    intervals that are too narrow. Resamples that lose a class are discarded. Deterministic in ``seed``.
    """
    y, s = _labels_scores(labels, scores)
    _require_both_classes(y, "bootstrap_auc_ci")
    if not 0 < alpha < 1 or n < 1:
        raise ValueError("need 0 < alpha < 1 and n >= 1")
    if groups is None:
        gid = np.arange(y.size, dtype=np.int64)
    else:
        g = np.asarray(groups).ravel()
        if g.size != y.size:
            raise ValueError("groups must have one entry per score")
        gid = pd.factorize(pd.Series(g), use_na_sentinel=False)[0].astype(np.int64)
    aucs = _bootstrap_aucs(y, s, gid, n, np.random.default_rng(seed))
    aucs = aucs[np.isfinite(aucs)]
    if aucs.size == 0:
        raise ValueError("every bootstrap resample lost a class; too few groups")
    low, high = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def breakdown(
    df: pd.DataFrame,
    by: str,
    *,
    score_col: str = "score",
    label_col: str = "label",
    threshold: float = 0.5,
    real_pool: str = "auto",
    n_boot: int = 0,
    group_col: str | None = "source_id",
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """``summarize`` per value of column ``by`` (e.g. "method" or "dataset").

    Real pool (which reals each subset is scored against):

    - ``"all"``: the fakes of the value against ALL reals of ``df``. This is the DeepfakeBench
      convention for per-manipulation numbers (Deepfakes, Face2Face, ... each against every FF++
      original), since reals have no method of their own.
    - ``"own"``: only the rows having that value (reals and fakes), right for per-dataset numbers.
    - ``"auto"`` (default): ``"all"`` for a value with fakes only, ``"own"`` otherwise. A real-only
      value (e.g. method "real") is reported alone: its AUC is None but its FPR is meaningful.

    Each entry adds ``real_pool`` (the pool used) and, when ``n_boot`` > 0, ``auc_ci`` from the
    cluster bootstrap over ``group_col`` (frame-level rows of one video are resampled together).
    """
    if real_pool not in {"auto", "all", "own"}:
        raise ValueError("real_pool must be 'auto', 'all' or 'own'")
    if by not in df.columns:
        raise ValueError(f"missing column {by!r}")
    is_real = df[label_col].to_numpy() == 0
    out: dict[str, dict[str, Any]] = {}
    for value, rows in df.groupby(by, sort=True, dropna=False):
        has_fake = bool((rows[label_col] == 1).any())
        has_real = bool((rows[label_col] == 0).any())
        pool = real_pool
        if pool == "auto":
            pool = "all" if has_fake and not has_real else "own"
        subset = pd.concat([rows[rows[label_col] == 1], df[is_real]]) if pool == "all" else rows
        entry = summarize(subset[label_col].to_numpy(), subset[score_col].to_numpy(), threshold)
        entry["real_pool"] = pool
        if n_boot > 0 and entry["auc"] is not None:
            groups = subset[group_col].to_numpy() if group_col and group_col in subset else None
            entry["auc_ci"] = list(bootstrap_auc_ci(subset[label_col], subset[score_col], groups=groups,
                                                    n=n_boot, seed=seed))
        out[str(value)] = entry
    return out


def finite_or_none(x: float | None) -> float | None:
    """NaN and infinities become None (JSON null)."""
    return None if x is None or not math.isfinite(x) else float(x)
