"""Evaluation: metrics (frame and video level), calibration, robustness, figures and reports.

Library code uses NumPy, SciPy, pandas, OpenCV and matplotlib only (scikit-learn serves the tests).
"""

from __future__ import annotations

from deepfake_detection.evaluate.calibration import (
    calibrated,
    choose_threshold,
    fit_calibration,
    fit_platt,
    fit_temperature,
    sigmoid,
)
from deepfake_detection.evaluate.metrics import (
    average_precision,
    binary_metrics,
    bootstrap_auc_ci,
    breakdown,
    eer,
    expected_calibration_error,
    log_loss,
    precision_recall_curve,
    roc_auc,
    roc_curve,
    summarize,
    video_level,
)
from deepfake_detection.evaluate.pipeline import evaluate_level, evaluate_predictions, make_plots
from deepfake_detection.evaluate.report import compare_table, to_jsonable, write_comparison, write_report
from deepfake_detection.evaluate.robustness import PERTURBATIONS, robustness_table

__all__ = [
    "PERTURBATIONS",
    "average_precision",
    "binary_metrics",
    "bootstrap_auc_ci",
    "breakdown",
    "calibrated",
    "choose_threshold",
    "compare_table",
    "eer",
    "evaluate_level",
    "evaluate_predictions",
    "expected_calibration_error",
    "fit_calibration",
    "fit_platt",
    "fit_temperature",
    "log_loss",
    "make_plots",
    "precision_recall_curve",
    "robustness_table",
    "roc_auc",
    "roc_curve",
    "sigmoid",
    "summarize",
    "to_jsonable",
    "video_level",
    "write_comparison",
    "write_report",
]
