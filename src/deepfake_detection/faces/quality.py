"""Face sharpness, and when a face is too blurry for a trustworthy verdict.

Blur removes the traces a detector reads, and FaceForensics++ fakes are blurrier than their reals
(Deepfakes most), so every model trained here scores blurry real faces as faker: on held-out reals, the
blurriest third of the faces gets several times the false alarms of the sharpest third (the bundled
model card, "failure cases"). Training against it (balanced or matched sharpness, `train/sharpness.py`)
did not remove it, so the product says when a face is that blurry instead of hiding it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from deepfake_detection.faces.crop import crop_faces
from deepfake_detection.faces.types import Face
from deepfake_detection.models.spec import CropProtocol

# Sharpness is measured on the face cut at this size (with the model's crop protocol), whatever the
# model's input size: the Laplacian's variance depends on the scale an image is seen at.
REFERENCE_SIZE = 192
# The lower third of the bundled model's training reals (fold 4 train split, all sources), measured as
# `crop_sharpness`; `scripts/blurry_face_threshold.py` derives it and reports the false alarms either side.
BLURRY_FACE_SHARPNESS = 57.0


def centre_sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian over the central half of a grey image: the face, not the background
    or the padding around it."""
    h, w = grey.shape
    centre = grey[h // 4: h - h // 4, w // 4: w - w // 4]
    return float(cv2.Laplacian(centre, cv2.CV_64F).var())


def crop_sharpness(crop: np.ndarray) -> float:
    """`centre_sharpness` of an RGB face crop at REFERENCE_SIZE."""
    if crop.shape[0] != REFERENCE_SIZE or crop.shape[1] != REFERENCE_SIZE:
        crop = cv2.resize(crop, (REFERENCE_SIZE, REFERENCE_SIZE), interpolation=cv2.INTER_AREA)
    return centre_sharpness(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY))


def is_blurry(sharpness: float) -> bool:
    return sharpness < BLURRY_FACE_SHARPNESS


def faces_sharpness(image: np.ndarray, faces: Sequence[Face], protocol: CropProtocol,
                    crops: Sequence[np.ndarray] = ()) -> list[float]:
    """`crop_sharpness` of each face of an RGB image, framed by `protocol` at REFERENCE_SIZE; the
    classifier's `crops` are reused when they are of that size (the bundled model's)."""
    if len(crops) != len(faces) or any(c.shape[:2] != (REFERENCE_SIZE, REFERENCE_SIZE) for c in crops):
        crops = crop_faces(image, faces, REFERENCE_SIZE, protocol)
    return [crop_sharpness(c) for c in crops]
