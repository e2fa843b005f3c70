"""`dfd calibrate`: a trained model's calibration (Platt or temperature scaling) and threshold refitted
on a manifest's validation source files through the product path (decode, detect, crop, classify), as
`dfd train` does at the end of a run; optionally with mirror-image test-time augmentation switched on
or off first, so the fit is made on the logits the model will serve.

The weights do not change. The result (safetensors + ONNX, the spec in their metadata, and
calibration.json saying how it was fitted) goes to another folder: the input model stays as it was.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from deepfake_detection.errors import DFDError
from deepfake_detection.io.atomic import write_text_atomic
from deepfake_detection.models.spec import ModelSpec

log = logging.getLogger(__name__)


def recalibrate(weights: str | Path, manifest: str | Path, out: str | Path, *, tta_hflip: bool | None = None,
                strategy: str = "fpr", target_fpr: float = 0.05, split: str = "val",
                frames: int = 8, calibration: str = "platt",
                jpeg_quality: int | None = None) -> tuple[ModelSpec, int]:
    """(new spec, validation frames used). `weights`: a .safetensors model file; `tta_hflip`: None
    keeps the model's setting; `jpeg_quality`: also fit on JPEG copies of the frames at that quality.
    DFDError for a missing split, unreadable sources or out == input."""
    from deepfake_detection.evaluate.product_path import fit_on_product_path
    from deepfake_detection.export.onnx import export_onnx
    from deepfake_detection.infer.predictor import Predictor
    from deepfake_detection.models.files import load_model_file, save_model
    from deepfake_detection.train.data import load_manifests

    weights, out = Path(weights), Path(out)
    if weights.suffix != ".safetensors":
        raise DFDError(f"{weights}: give the .safetensors weights (the ONNX file is exported anew)")
    if out.resolve() == weights.parent.resolve():
        raise DFDError(f"{out}: write the recalibrated model to another folder than the input's")
    rows = load_manifests([str(manifest)])
    rows = rows[rows["split"] == split].reset_index(drop=True)
    if rows.empty:
        raise DFDError(f"{manifest}: no rows of split {split!r} to calibrate on")
    model, spec = load_model_file(weights)
    if tta_hflip is not None:
        spec = replace(spec, tta_hflip=tta_hflip)
    out.mkdir(parents=True, exist_ok=True)
    # Scored with the old calibration (undone from the probabilities) from a scratch file, so an
    # interrupted fit leaves no half-calibrated model in `out`.
    scratch = out / ".scoring.onnx"
    try:
        predictor = Predictor.load(export_onnx(model, spec, scratch))
        fit = fit_on_product_path(predictor, rows, strategy=strategy, target_fpr=target_fpr, frames=frames,
                                  calibration=calibration, jpeg_quality=jpeg_quality)
    finally:
        scratch.unlink(missing_ok=True)
    spec = replace(spec, temperature=fit.temperature, bias=fit.bias, threshold=fit.threshold)
    save_model(model, spec, out / "model.safetensors")
    export_onnx(model, spec, out / "model.onnx")
    record = {"weights": str(weights), "manifest": str(manifest), "split": split, "frames": fit.frames,
              "calibration": calibration, "strategy": strategy, "target_fpr": target_fpr,
              "temperature": spec.temperature, "bias": spec.bias, "threshold": spec.threshold,
              "tta_hflip": spec.tta_hflip, "jpeg_quality": jpeg_quality}
    write_text_atomic(out / "calibration.json", json.dumps(record, indent=2) + "\n")
    log.info("%s: T %.3f, bias %.3f, threshold %.4f on %d validation frames (tta_hflip %s, JPEG copies %s)",
             out, spec.temperature, spec.bias, spec.threshold, fit.frames, spec.tta_hflip, jpeg_quality)
    return spec, fit.frames
