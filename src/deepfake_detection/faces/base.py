"""FaceDetector base class (shared pre/post-processing) and a tiny backend registry.

Adding a backend = one module with one class decorated by `@register_detector("name")` that
implements `_detect(image_small)`; list its module in `_BUILTIN_MODULES` (or import it yourself).
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import cv2
import numpy as np

from deepfake_detection.errors import DFDError, ImageError
from deepfake_detection.faces.types import Face

log = logging.getLogger(__name__)


class DetectorError(DFDError):
    """A face detector cannot be created or run."""


class UnknownDetectorError(DetectorError):
    """A detector name is not in the registry."""


class DetectorUnavailableError(DetectorError):
    """A registered backend cannot be built here (missing package, missing model file, ...)."""


class FaceDetector(ABC):
    """Finds faces in RGB uint8 (H, W, 3) images; boxes/landmarks are in the input's pixels.

    Coordinates are continuous pixel-edge coordinates: pixel (i, j) covers [j, j+1) x [i, i+1).
    """

    name: ClassVar[str] = ""
    DEFAULT_SCORE_THRESHOLD: ClassVar[float] = 0.5

    def __init__(self, *, max_side: int = 640, min_face: int = 20, score_threshold: float | None = None):
        if max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {max_side}")
        self.max_side = int(max_side)
        self.min_face = float(min_face)
        # None -> the backend's own default: scores of different backends are not comparable.
        threshold = self.DEFAULT_SCORE_THRESHOLD if score_threshold is None else score_threshold
        self.score_threshold = float(threshold)

    @abstractmethod
    def _detect(self, image: np.ndarray) -> list[Face]:
        """Backend hook: faces in `image` (RGB uint8, max side <= max_side), in its pixels."""

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in `image`, biggest first. Large images are searched on an INTER_AREA-downscaled
        copy (speed; the detectors are trained on ~640 px images) and mapped back."""
        image = as_rgb_uint8(image)
        h, w = image.shape[:2]
        factor = 1.0
        small = image
        if max(h, w) > self.max_side:
            factor = self.max_side / max(h, w)
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        faces = self._detect(small)
        if factor != 1.0:
            faces = [f.scaled(1.0 / factor) for f in faces]
        out: list[Face] = []
        limits = np.array([w, h, w, h], dtype=np.float32)
        for face in faces:
            box = np.clip(face.box, 0.0, limits).astype(np.float32)
            # Shorter side of the visible box: a face cut by the frame edge is judged by what we can crop.
            if min(box[2] - box[0], box[3] - box[1]) < self.min_face:
                continue
            out.append(Face(box, float(face.score), face.landmarks))
        out.sort(key=lambda f: (f.width * f.height, f.score), reverse=True)
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_side={self.max_side}, min_face={self.min_face:g}, "
            f"score_threshold={self.score_threshold:g})"
        )


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"expected an RGB (H, W, 3) image, got shape {image.shape}")
    return image


# ---------------------------------------------------------------- registry

_REGISTRY: dict[str, type[FaceDetector]] = {}
# Imported on first registry use so that `import deepfake_detection.faces` stays cheap; the
# backend modules themselves import their heavy dependencies only when a detector is built.
_BUILTIN_MODULES = ("deepfake_detection.faces.retinaface", "deepfake_detection.faces.haar")
DEFAULT_DETECTOR = "retinaface"
FALLBACK_DETECTOR = "haar"

D = TypeVar("D", bound=type[FaceDetector])


def register_detector(name: str) -> Callable[[D], D]:
    def decorate(cls: D) -> D:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"detector name {name!r} already registered by {_REGISTRY[name].__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available_detectors() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def create_detector(name: str = DEFAULT_DETECTOR, **kwargs: Any) -> FaceDetector:
    """Build a detector by name. "auto" = the default backend, or "haar" (with a warning) when the
    default cannot be built here; the fallback gets only the generic max_side/min_face options."""
    _load_builtins()
    if name == "auto":
        try:
            return _REGISTRY[DEFAULT_DETECTOR](**kwargs)
        except DetectorUnavailableError as exc:
            log.warning("face detector %r unavailable (%s); falling back to %r", DEFAULT_DETECTOR, exc,
                        FALLBACK_DETECTOR)
            generic = {k: v for k, v in kwargs.items() if k in ("max_side", "min_face")}
            return _REGISTRY[FALLBACK_DETECTOR](**generic)
    cls = _REGISTRY.get(name)
    if cls is None:
        names = ", ".join([*sorted(_REGISTRY), "auto"])
        raise UnknownDetectorError(f"unknown face detector {name!r}; available: {names}")
    return cls(**kwargs)
