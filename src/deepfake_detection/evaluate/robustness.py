"""Deterministic image perturbations for robustness sweeps, and the sweep table.

Each perturbation maps an RGB uint8 array (H x W x 3, or H x W) to one of the same shape and dtype.
Apply them to face crops or to whole images before face detection: the caller decides (the second
also tests the detector). The set follows CNNDetection's blur + JPEG recipe plus resizing and sensor
noise, the degradations users report flipping verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike

from deepfake_detection.evaluate.metrics import roc_auc

__all__ = ["PERTURBATIONS", "blur", "downscale", "gaussian_noise", "h264", "jpeg", "low_resolution_h264",
           "low_resolution_jpeg", "robustness_table"]

NOISE_SIGMA = 8.0
NOISE_SEED = 0


def _check(img: np.ndarray) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise TypeError("perturbations take uint8 NumPy arrays")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) or min(img.shape[:2]) < 1:
        raise ValueError(f"expected an H x W x 3 RGB or H x W image, got shape {img.shape}")
    return np.ascontiguousarray(img)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Re-encode as JPEG at ``quality`` (OpenCV's libjpeg, 4:2:0 chroma subsampling)."""
    img = _check(img)
    bgr = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)  # OpenCV encodes BGR
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    flag = cv2.IMREAD_GRAYSCALE if img.ndim == 2 else cv2.IMREAD_COLOR
    out = cv2.imdecode(buf, flag)
    if out is None:
        raise RuntimeError("JPEG decoding failed")
    return out if img.ndim == 2 else cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def h264(img: np.ndarray, crf: int) -> np.ndarray:
    """One frame through H.264 and back: libx264 at constant rate factor ``crf``, 4:2:0, ffmpeg's default
    preset (FaceForensics++ c23 / c40 are CRF 23 / 40 with it). Video compression is not JPEG: 4x4
    transforms, intra prediction and an in-loop deblocking filter smear detail instead of leaving 8x8
    blocks. Needs PyAV (the `train` extra); a lone frame is an intra frame."""
    img = _check(img)
    try:
        import av
    except ImportError as exc:  # the inference install has no PyAV
        raise RuntimeError("H.264 needs PyAV: pip install 'deepfake-detection[train]'") from exc
    h, w = img.shape[:2]
    rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else img
    # 4:2:0 wants even sides: repeat the last row / column, cut it off afterwards.
    rgb = cv2.copyMakeBorder(rgb, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
    encoder.options = {"crf": str(int(crf)), "preset": "medium", "tune": "zerolatency", "threads": "1"}
    frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8, copy=False), format="rgb24")
    frame = frame.reformat(format="yuv420p")
    packets = [*encoder.encode(frame), *encoder.encode(None)]
    decoder = av.CodecContext.create("h264", "r")
    decoder.thread_count = 1
    decoded = [f for packet in packets for f in decoder.decode(packet)] + list(decoder.decode(None))
    if len(decoded) != 1:
        raise RuntimeError(f"H.264 round trip gave {len(decoded)} frames, expected 1")
    out = decoded[0].to_ndarray(format="rgb24")[:h, :w]
    return cv2.cvtColor(out, cv2.COLOR_RGB2GRAY) if img.ndim == 2 else np.ascontiguousarray(out)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; the kernel spans +-3 sigma (odd size), as in CNNDetection's augmentation."""
    img = _check(img)
    k = 2 * math.ceil(3 * sigma) + 1
    return cv2.GaussianBlur(img, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def downscale(img: np.ndarray, factor: float) -> np.ndarray:
    """Shrink by ``factor`` (INTER_AREA, no aliasing) and enlarge back to the original size
    (INTER_LINEAR): the detail lost to a low-resolution upload, at the model's input size."""
    return _shrunk_and_back(_check(img), factor, lambda small: small)


def low_resolution_jpeg(img: np.ndarray, factor: float, quality: int) -> np.ndarray:
    """JPEG at ``quality`` applied to a copy shrunk by ``factor``, enlarged back: a compressed
    low-resolution source, whose 8x8 blocks cover more of the face once the crop is scaled up."""
    return _shrunk_and_back(_check(img), factor, partial(jpeg, quality=quality))


def low_resolution_h264(img: np.ndarray, factor: float, crf: int) -> np.ndarray:
    """`h264` at ``crf`` applied to a copy shrunk by ``factor``, enlarged back (as low_resolution_jpeg)."""
    return _shrunk_and_back(_check(img), factor, partial(h264, crf=crf))


def _shrunk_and_back(img: np.ndarray, factor: float,
                     degrade: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * factor)), max(1, round(h * factor))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(degrade(small), (w, h), interpolation=cv2.INTER_LINEAR)


def gaussian_noise(img: np.ndarray, sigma: float = NOISE_SIGMA, seed: int = NOISE_SEED) -> np.ndarray:
    """Add N(0, sigma^2) noise in gray levels; a fresh generator per call keeps it reproducible."""
    img = _check(img)
    noise = np.random.default_rng(seed).normal(0.0, sigma, size=img.shape)
    return np.clip(np.rint(img + noise), 0, 255).astype(np.uint8)


PERTURBATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg90": partial(jpeg, quality=90),
    "jpeg70": partial(jpeg, quality=70),
    "jpeg50": partial(jpeg, quality=50),
    "jpeg30": partial(jpeg, quality=30),
    "blur1": partial(blur, sigma=1.0),
    "blur2": partial(blur, sigma=2.0),
    "blur3": partial(blur, sigma=3.0),
    "down0.5": partial(downscale, factor=0.5),
    "down0.25": partial(downscale, factor=0.25),
    "noise": gaussian_noise,
    # in no default sweep (`dfd evaluate --robustness` picks them): FF++ c40's codec on every test frame
    "h264_crf32": partial(h264, crf=32),
    "h264_crf40": partial(h264, crf=40),
}


def robustness_table(
    labels: ArrayLike, clean_scores: ArrayLike, perturbed: Mapping[str, ArrayLike]
) -> dict[str, Any]:
    """AUC per perturbation and its drop versus clean (positive = worse), for ``report.py``.

    Returns ``{"clean_auc": float, "mean_auc_drop": float | None,
    "perturbations": {name: {"auc": float, "auc_drop": float}}}``; the scores of every perturbation
    must be for the same samples, in the same order, as ``clean_scores``.
    """
    clean = roc_auc(labels, clean_scores)
    rows = {}
    for name, scores in perturbed.items():
        auc = roc_auc(labels, scores)
        rows[name] = {"auc": auc, "auc_drop": clean - auc}
    drops = [r["auc_drop"] for r in rows.values()]
    return {"clean_auc": clean, "mean_auc_drop": float(np.mean(drops)) if drops else None,
            "perturbations": rows}
