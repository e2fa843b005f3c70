"""Face detection and THE crop protocol.

    detector = create_detector()            # RetinaFace; "haar" or "auto" (falls back to haar)
    faces = detector.detect(rgb_uint8)      # list[Face], original pixels, biggest first
    crops = crop_faces(rgb_uint8, faces, 224, spec.crop)

Backends load lazily: importing this package does not import onnxruntime or the weights.
"""

from deepfake_detection.faces.base import (
    DetectorError,
    DetectorUnavailableError,
    FaceDetector,
    UnknownDetectorError,
    available_detectors,
    create_detector,
    register_detector,
)
from deepfake_detection.faces.crop import (
    CROP_PROTOCOL_VERSION,
    UnsupportedCropProtocolError,
    crop_face,
    crop_faces,
    crop_square_box,
    crop_transform,
)
from deepfake_detection.faces.types import Face

__all__ = [
    "CROP_PROTOCOL_VERSION",
    "DetectorError",
    "DetectorUnavailableError",
    "Face",
    "FaceDetector",
    "UnknownDetectorError",
    "UnsupportedCropProtocolError",
    "available_detectors",
    "create_detector",
    "crop_face",
    "crop_faces",
    "crop_square_box",
    "crop_transform",
    "register_detector",
]
