"""Crops -> model input. Runs once per inference call, so it is vectorised and allocates one array."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepfake_detection.models.spec import ModelSpec


def _affine(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    # (x/255 - mean)/std == x*scale + bias: one multiply-add per pixel, computed in float32.
    mean = np.asarray(spec.mean, np.float32).reshape(3, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(3, 1, 1)
    return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def _resize(crop: np.ndarray, size: int) -> np.ndarray:
    import cv2  # only needed when a caller hands us crops of the wrong size

    shrink = crop.shape[0] > size or crop.shape[1] > size
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_batch(crops: Sequence[np.ndarray], spec: ModelSpec) -> np.ndarray:
    """RGB uint8 (S,S,3) crops -> normalised float32 (N,3,S,S); other sizes are resized to S."""
    size = spec.input_size
    out = np.empty((len(crops), 3, size, size), np.float32)
    scale, bias = _affine(spec)
    for i, crop in enumerate(crops):
        if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3 or min(crop.shape[:2]) == 0:
            raise ValueError(f"crop {i}: expected RGB uint8 (H,W,3), got {crop.dtype} {crop.shape}")
        if crop.shape[0] != size or crop.shape[1] != size:
            crop = _resize(crop, size)
        # Writing into out[i] through a transposed view: no temporaries per crop.
        np.multiply(crop.transpose(2, 0, 1), scale, out=out[i])
        out[i] += bias
    return out


def sigmoid_probability(logits: np.ndarray, temperature: float = 1.0, bias: float = 0.0) -> np.ndarray:
    """sigmoid(logit / temperature + bias) as float32; the tanh form never overflows for large |logit|."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, np.float64) / temperature + bias
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)
