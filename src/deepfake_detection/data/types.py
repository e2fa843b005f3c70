"""Contracts of the data pipeline: what a dataset layout yields, and one manifest row per crop."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

Kind = Literal["image", "video"]
REAL, FAKE = 0, 1


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One raw file of a dataset, before any face work (slots: 200,000 of them are held at once)."""

    path: str  # absolute path of the image or video
    kind: Kind
    label: int  # 0 = real, 1 = deepfake
    dataset: str  # "ffpp", "dfdc", "celebdf", "folder", "csv", ...
    group: str  # identity group: the unit of splitting (never parsed from a path position)
    source_id: str  # unique id of the file within the dataset, e.g. "ffpp:Deepfakes/000_003"
    method: str = "real"  # manipulation method; "real" for label 0, "unknown" when a fake's is not known
    official_split: str | None = None  # "train" / "val" / "test" from the dataset's own lists, if any


class Layout(Protocol):
    """A dataset layout: one small module in `data/layouts/` implements it and registers itself."""

    name: str

    def matches(self, root: Path) -> bool:
        """Cheap check (a few stat calls) that `root` is in this layout."""
        ...

    def items(self, root: Path) -> Iterator[SourceItem]:
        """Every source file under `root`, in a deterministic order."""
        ...


# Manifest columns (Parquet, one row per face crop). `crop_path` is relative to the output folder.
# `box` is [x1, y1, x2, y2] in the source frame's pixels; `landmarks` are the 5 points in CROP pixels
# (what self-blending needs); `landmarks68` is optional (68 points in crop pixels, when available).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "crop_path", "source_path", "source_id", "frame_index", "face_index", "box", "landmarks", "landmarks68",
    "det_score", "label", "method", "dataset", "group", "split", "content_hash", "phash", "crop_size",
    "crop_protocol", "crop_scale", "crop_align", "crop_detector",
)
# The crop protocol columns (models.spec.CropProtocol + crop_size): a manifest whose rows disagree on
# them mixes crops made differently, which training refuses. Manifests written before these columns
# existed read as protocol v1 defaults with an unknown detector.
CROP_PROTOCOL_COLUMNS: tuple[str, ...] = ("crop_protocol", "crop_scale", "crop_align", "crop_detector",
                                          "crop_size")


@dataclass
class CropRecord:
    crop_path: str
    source_path: str
    source_id: str
    frame_index: int  # 0 for images
    face_index: int  # 0 = biggest face of the frame
    box: list[float]
    landmarks: list[float] | None  # 10 floats (x0, y0, ..., x4, y4) in crop pixels
    det_score: float
    label: int
    method: str
    dataset: str
    group: str
    content_hash: str  # sha256 of the crop file's bytes
    phash: int  # 64-bit perceptual hash (data.dedup.perceptual_hash), as a signed int64
    crop_size: int
    crop_protocol: int
    crop_scale: float = 1.3
    crop_align: bool = False
    crop_detector: str = "unknown"  # the registry name of the detector that made the box
    split: str = ""  # filled at finalisation
    landmarks68: list[float] | None = field(default=None)
