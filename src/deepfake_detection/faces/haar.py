"""OpenCV Haar-cascade fallback: no extra dependencies, frontal faces only, no landmarks."""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from deepfake_detection.faces.base import DetectorUnavailableError, FaceDetector, register_detector
from deepfake_detection.faces.types import Face

CASCADE_FILE = "haarcascade_frontalface_default.xml"


def _cascade_path() -> str:
    data = getattr(cv2, "data", None)  # cv2.data ships with opencv-python wheels; OpenCV 5 drops Haar
    folder = getattr(data, "haarcascades", None)
    if not folder or not os.path.isfile(os.path.join(folder, CASCADE_FILE)):
        raise DetectorUnavailableError(
            f"OpenCV {cv2.__version__} has no {CASCADE_FILE} (cv2.data.haarcascades missing); "
            "install opencv-python 4.x or use the 'retinaface' detector"
        )
    return os.path.join(folder, CASCADE_FILE)


@register_detector("haar")
class HaarFaceDetector(FaceDetector):
    """Score: detectMultiScale3(outputRejectLevels=True) gives, per grouped detection, the boosted
    sum of the last cascade stage (best over the group). That sum is a log-odds-like margin
    (GentleBoost estimates half the log-odds), so score = sigmoid(sum): ~0.99 for clear faces,
    ~0.5 for borderline windows. minNeighbors remains the main filter, hence threshold 0."""

    DEFAULT_SCORE_THRESHOLD = 0.0

    def __init__(self, *, scale_factor: float = 1.1, min_neighbors: int = 5, **kwargs: Any):
        super().__init__(**kwargs)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self._cascade = cv2.CascadeClassifier(_cascade_path())
        if self._cascade.empty():
            raise DetectorUnavailableError(f"cannot load {CASCADE_FILE}")

    def _detect(self, image: np.ndarray) -> list[Face]:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        rects, _levels, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, outputRejectLevels=True
        )
        faces = []
        for (x, y, w, h), weight in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1),
                                        strict=True):
            score = float(1.0 / (1.0 + np.exp(-float(weight))))
            if score >= self.score_threshold:
                box = np.array([x, y, x + w, y + h], dtype=np.float32)
                faces.append(Face(box, score, None))
        return faces
