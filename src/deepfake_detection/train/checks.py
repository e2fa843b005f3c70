"""Sanity checks on a finished training run: a model no better than chance, or a calibration that ran
into the bounds of its temperature or bias, must not be exported without a word (`dfd train` warns; `--strict`
fails)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from deepfake_detection.evaluate.calibration import BIAS_MAX, T_MAX, T_MIN

CHANCE_AUC = 0.5


def run_problems(summary: dict[str, Any]) -> list[str]:
    """What is wrong with a run, from its summary.json (empty when nothing is)."""
    problems = []
    auc = summary.get("val_auc")
    if auc is None or not math.isfinite(float(auc)) or float(auc) <= CHANCE_AUC:
        problems.append(f"validation AUC {auc} is at or below chance ({CHANCE_AUC}): the model does not "
                        "tell real from fake on validation data (too little training, bad data, or swapped "
                        "labels)")
    temperature = summary.get("temperature")
    if temperature is not None:
        t = float(temperature)
        if math.isclose(t, T_MIN, rel_tol=1e-3) or math.isclose(t, T_MAX, rel_tol=1e-3):
            problems.append(f"the calibration temperature {t:g} hit its bound [{T_MIN:g}, {T_MAX:g}]: the "
                            "fake probabilities are not calibrated")
    bias = summary.get("bias")
    if bias is not None and math.isclose(abs(float(bias)), BIAS_MAX, rel_tol=1e-3):
        problems.append(f"the calibration bias {float(bias):g} hit its bound +-{BIAS_MAX:g}: the fake "
                        "probabilities are not calibrated")
    return problems


def check_run(out: Path) -> list[str]:
    """run_problems of the run folder `out` (its summary.json; none when there is no summary)."""
    path = Path(out) / "summary.json"
    if not path.is_file():
        return []
    return run_problems(json.loads(path.read_text()))
