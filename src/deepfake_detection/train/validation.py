"""The validation figures that pick a run's checkpoint, for the trainer and for any model file.

`dfd train` keeps the epoch with the best `select_metric` on the validation crops; `score_model_file`
computes the same numbers for weights made outside a run (e.g. an average of several runs), so they
can be held to the same rule before anyone looks at a test split.
"""

from __future__ import annotations

import logging
import math
import os
from functools import partial
from pathlib import Path

import numpy as np

from deepfake_detection.evaluate.metrics import roc_auc, within_source_auc

log = logging.getLogger(__name__)


def validation_aucs(logits: np.ndarray, labels: np.ndarray, sources: np.ndarray) -> tuple[float, float]:
    """(pooled AUC, within-source AUC); an undefined AUC is NaN (e.g. one class left)."""
    aucs = []
    for name, fn in (("pooled", roc_auc), ("within-source", partial(within_source_auc, sources=sources))):
        try:
            aucs.append(fn(labels, logits))
        except ValueError as exc:
            log.warning("val %s AUC undefined: %s", name, exc)
            aucs.append(math.nan)
    return aucs[0], aucs[1]


def score_model_file(weights: str | os.PathLike[str], config: str | os.PathLike[str],
                     overrides: tuple[str, ...] = ()) -> dict[str, float]:
    """A model file's validation figures on the validation split of a run config's manifests (the
    run's own `config.yaml`: the same crops, transform and order as its epochs were scored on)."""
    from deepfake_detection.models.files import load_model_file
    from deepfake_detection.train import distributed as D
    from deepfake_detection.train.config import load_config
    from deepfake_detection.train.loop import StepContext, bce_from_logits, predict
    from deepfake_detection.train.setup import build_data

    cfg = load_config(Path(config), overrides)
    info = D.setup("cpu")
    model, spec = load_model_file(weights)
    data = build_data(cfg, spec, info)
    logits, labels = predict(model, data.val_loader, StepContext(info.device, None, False), info,
                             tta_hflip=spec.tta_hflip)
    pooled, within = validation_aucs(logits, labels, data.val_rows["dataset"].astype(str).to_numpy())
    return {"val_loss": bce_from_logits(logits, labels), "val_auc": pooled, "val_auc_within": within,
            "val_samples": float(len(labels))}


__all__ = ["score_model_file", "validation_aucs"]
