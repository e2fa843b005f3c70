"""Calibration (temperature scaling or Platt scaling) and decision thresholds, both fitted on
VALIDATION data only.

Fitting either on the test set makes the reported accuracy, F1 and calibration optimistic (the
DeepfakeBench caveat in ANCHORS.md). The model then stores them: probability =
sigmoid(logit / T + bias), verdict fake when probability >= threshold. Temperature scaling alone
(bias 0) can only sharpen or soften: it cannot remove an offset, and a detector trained on balanced,
self-blended classes is offset on real material (it calls "fake" more often than fakes occur). Platt
scaling fits the bias too. Both keep the ranking, so AUC and the verdicts at a rank-based threshold
are unchanged; only the probabilities (and ECE) move.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize, minimize_scalar

from deepfake_detection.evaluate.metrics import _clf_curve, _labels_scores

__all__ = ["BIAS_MAX", "CALIBRATIONS", "T_MAX", "T_MIN", "calibrated", "choose_threshold", "fit_calibration",
           "fit_platt", "fit_temperature", "sigmoid"]

T_MIN, T_MAX = 0.05, 20.0
BIAS_MAX = 10.0  # |bias| beyond this means the validation data are one class in all but name
CALIBRATIONS = ("platt", "temperature")
STRATEGIES = ("youden", "f1", "fpr")


def sigmoid(x: ArrayLike) -> np.ndarray:
    """Numerically stable logistic function."""
    z = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def calibrated(logits: ArrayLike, temperature: float, bias: float = 0.0) -> np.ndarray:
    """The calibrated probability sigmoid(logit / T + bias), as the model's spec defines it."""
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature + bias)


def _both_classes(labels: ArrayLike, values: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    y, v = _labels_scores(labels, values)
    if y.all() or not y.any():
        raise ValueError(f"{what} needs validation data with both real (0) and fake (1) samples")
    return y, v


def fit_temperature(logits: ArrayLike, labels: ArrayLike) -> float:
    """The temperature T in [0.05, 20] minimising the NLL of sigmoid(logit / T) on VALIDATION data.

    Searched over log T (bounded Brent) since the loss is far better conditioned there. Temperature
    scaling keeps the ranking, so AUC is unchanged; only probabilities and ECE move.
    """
    y, z = _both_classes(labels, logits, "fit_temperature")
    sign = np.where(y, -1.0, 1.0)  # NLL = mean softplus(-z/T) for fakes, softplus(z/T) for reals

    def nll(log_t: float) -> float:
        return float(np.mean(np.logaddexp(0.0, sign * z / math.exp(log_t))))

    res = minimize_scalar(nll, bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded",
                          options={"xatol": 1e-6})
    return float(min(max(math.exp(res.x), T_MIN), T_MAX))


def fit_platt(logits: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """(T, bias) minimising the NLL of sigmoid(logit / T + bias) on VALIDATION data: Platt scaling,
    parametrised like temperature scaling so that bias 0 is exactly the temperature model. T is
    kept in [T_MIN, T_MAX] (a positive slope: the ranking never flips), |bias| <= BIAS_MAX."""
    y, z = _both_classes(labels, logits, "fit_platt")
    sign = np.where(y, -1.0, 1.0)

    def nll(params: np.ndarray) -> float:
        return float(np.mean(np.logaddexp(0.0, sign * (z / math.exp(params[0]) + params[1]))))

    start = np.array([math.log(fit_temperature(z, y)), 0.0])
    res = minimize(nll, start, method="L-BFGS-B",
                   bounds=[(math.log(T_MIN), math.log(T_MAX)), (-BIAS_MAX, BIAS_MAX)])
    return float(min(max(math.exp(res.x[0]), T_MIN), T_MAX)), float(res.x[1])


def fit_calibration(logits: ArrayLike, labels: ArrayLike, method: str = "platt") -> tuple[float, float]:
    """(T, bias) by `method`: "platt" (slope and offset) or "temperature" (bias 0)."""
    if method == "platt":
        return fit_platt(logits, labels)
    if method == "temperature":
        return fit_temperature(logits, labels), 0.0
    raise ValueError(f"unknown calibration {method!r}; choose one of {CALIBRATIONS}")


def choose_threshold(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    strategy: str = "youden",
    target_fpr: float = 0.05,
) -> float:
    """A decision threshold (fake when prob >= threshold) chosen on VALIDATION data only.

    - ``"youden"``: maximise TPR - FPR (balanced accuracy), robust to class imbalance.
    - ``"f1"``: maximise F1 of the fake class.
    - ``"fpr"``: the highest TPR whose FPR is <= ``target_fpr`` (an operating point that bounds
      false alarms on real faces).

    The threshold returned is the midpoint between the chosen score and the next lower distinct
    score: it reproduces the chosen operating point on these data and leaves a margin on new ones.
    Ties between equally good points go to the higher threshold (fewer false alarms).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if strategy == "fpr" and not 0 <= target_fpr <= 1:
        raise ValueError("target_fpr must lie in [0, 1]")
    y, p = _both_classes(labels, probs, "choose_threshold")
    fps, tps, thr = _clf_curve(y, p)  # one point per distinct score, highest first
    n_pos, n_neg = tps[-1], fps[-1]
    tpr, fpr = tps / n_pos, fps / n_neg
    if strategy == "youden":
        k = int(np.argmax(tpr - fpr))
    elif strategy == "f1":
        k = int(np.argmax(2 * tps / (tps + fps + n_pos)))
    else:
        ok = np.flatnonzero(fpr <= target_fpr + 1e-12)
        if ok.size == 0:
            # Even the highest score lets through too many reals: call nothing fake.
            return float(np.nextafter(thr[0], np.inf))
        k = int(ok[np.argmax(tpr[ok])])
    if k + 1 < thr.size:
        return float((thr[k] + thr[k + 1]) / 2)
    return float(thr[k])
