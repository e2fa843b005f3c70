"""Result types: plain data, no drawing, no model. `to_dict()` gives the JSONL contract of `dfd detect`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from deepfake_detection.faces.quality import BLURRY_FACE_SHARPNESS, is_blurry

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
    sharpness: float | None = None  # faces/quality.py, of the face's crop (None: not measured)

    @property
    def blurry(self) -> bool | None:
        """Blurrier than the model's training reals mostly are: its verdict raises more false alarms."""
        return None if self.sharpness is None else is_blurry(self.sharpness)

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 1) for v in self.box],
            "detector_score": round(self.detector_score, 4),
            "fake_probability": round(self.fake_probability, 6),
            "landmarks": None
            if self.landmarks is None
            else [[round(x, 1), round(y, 1)] for x, y in self.landmarks],
            "sharpness": None if self.sharpness is None else round(self.sharpness, 1),
            "blurry": self.blurry,
        }


def blurry_faces_warning(faces: Sequence[FaceResult]) -> str | None:
    """The warning a result carries when some of its faces are blurry (None: none is)."""
    n = sum(bool(f.blurry) for f in faces)
    if not n:
        return None
    which = "the face is" if len(faces) == 1 else f"{n} of {len(faces)} faces are"
    return (f"{which} blurry (sharpness under {BLURRY_FACE_SHARPNESS:g}): real faces this blurry are "
            "taken for fakes several times as often (see the model card)")


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
    warnings: list[str] = field(default_factory=list)  # what makes the verdict less reliable

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
            "warnings": self.warnings,
        }


@dataclass
class TrackResult:
    """One face followed through a video: its frame scores and their robust aggregate."""

    id: int
    fake_probability: float  # trimmed mean of `scores` (see infer/video.py)
    frame_indices: list[int]
    scores: list[float]
    first_box: list[float]
    last_box: list[float]
    times: list[float] = field(default_factory=list)  # seconds, one per score (empty: fps unknown)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "frames": len(self.scores),
            "fake_probability": round(self.fake_probability, 6),
            "first_frame": self.frame_indices[0] if self.frame_indices else None,
            "last_frame": self.frame_indices[-1] if self.frame_indices else None,
            "first_box": [round(v, 1) for v in self.first_box],
            "last_box": [round(v, 1) for v in self.last_box],
            "frame_scores": [[i, round(s, 4)] for i, s in zip(self.frame_indices, self.scores, strict=True)],
        }


@dataclass
class VideoResult(ImageResult):
    """A video verdict: every ImageResult field (`faces` holds one face per track, with the track's
    score, `fake_probability` the video's), plus the number of frames scored, the tracks and a
    per-second timeline."""

    frames: int = 0
    tracks: list[TrackResult] = field(default_factory=list)
    timeline: list[dict[str, float]] = field(default_factory=list)  # {second, fake_probability, faces}
    fps: float | None = None
    duration_s: float | None = None
    frames_requested: int = 0  # frames sampling asked for; more than `frames` when some did not decode

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.update({
            "frames": self.frames,
            "tracks": [track.to_dict() for track in self.tracks],
            "timeline": self.timeline,
            "fps": None if self.fps is None else round(self.fps, 3),
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "frames_requested": self.frames_requested,
        })
        return data


@dataclass
class LiveFace(FaceResult):
    """A tracked face: the `dfd detect` face fields (fake_probability smoothed) plus track data."""

    track_id: int = 0
    label: Label | None = None  # smoothed, with hysteresis
    raw_probability: float | None = None  # the latest unsmoothed score
    scored: bool = False  # classified on this frame (False: score carried from an earlier frame)
    lost: bool = False  # the latest detection did not find it: box held still, score carried, not re-scored

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        raw = None if self.raw_probability is None else round(self.raw_probability, 6)
        data.update({"track_id": self.track_id, "label": self.label, "scored": self.scored,
                     "raw_probability": raw, "lost": self.lost})
        return data


@dataclass
class FrameResult:
    index: int
    time: float  # seconds (file position, or since the first frame of a live source)
    threshold: float
    faces: list[LiveFace] = field(default_factory=list)
    fps: float = 0.0
    detect_every: int = 0
    detected: bool = False  # a detection was applied on this frame
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def fake_probability(self) -> float | None:
        return max((f.fake_probability for f in self.faces), default=None)

    @property
    def label(self) -> Label | None:
        return "fake" if any(f.label == "fake" for f in self.faces) else ("real" if self.faces else None)

    def to_dict(self) -> dict[str, Any]:
        p = self.fake_probability
        return {"frame": self.index, "time": round(self.time, 3), "status": "ok" if self.faces else "no_face",
                "fake_probability": None if p is None else round(p, 6), "label": self.label,
                "threshold": self.threshold, "faces": [f.to_dict() for f in self.faces],
                "fps": round(self.fps, 1), "detect_every": self.detect_every,
                "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()}}
