"""Result types: plain data, no drawing, no model. `to_dict()` gives the JSONL contract of `dfd detect`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "no_face", "error"]
Label = Literal["fake", "real"]


def label_for(probability: float | None, threshold: float) -> Label | None:
    if probability is None:
        return None
    return "fake" if probability >= threshold else "real"


@dataclass
class FaceResult:
    box: list[float]  # [x1, y1, x2, y2] in original image pixels
    detector_score: float
    fake_probability: float
    landmarks: list[list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 1) for v in self.box],
            "detector_score": round(self.detector_score, 4),
            "fake_probability": round(self.fake_probability, 6),
            "landmarks": None
            if self.landmarks is None
            else [[round(x, 1), round(y, 1)] for x, y in self.landmarks],
        }


@dataclass
class ImageResult:
    path: str | None
    status: Status
    threshold: float
    model: dict[str, str]
    fake_probability: float | None = None
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None
    image_size: tuple[int, int] | None = None  # (width, height)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> Label | None:
        return label_for(self.fake_probability, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "fake_probability": None if self.fake_probability is None else round(self.fake_probability, 6),
            "label": self.label,
            "threshold": self.threshold,
            "faces": [face.to_dict() for face in self.faces],
            "error": self.error,
            "model": self.model,
            "image_size": None if self.image_size is None else list(self.image_size),
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }
