"""Frame sampling from videos: decode only what is needed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from deepfake_detection.errors import CorruptImageError

# Seeking re-decodes from the previous keyframe, so it only pays off for long gaps.
_SEEK_GAP = 48


@dataclass(frozen=True)
class VideoInfo:
    frame_count: int  # as the container declares it (0 when unknown)
    fps: float | None  # None when the container does not say
    width: int
    height: int


def video_info(path: str) -> VideoInfo:
    """Frame count, frame rate and size of a video file, without decoding frames."""
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise CorruptImageError(f"{path}: cannot open video")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        return VideoInfo(max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0), fps if 0 < fps < 1000 else None,
                         int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()


def frame_indices(total: int, *, count: int | None = 32, stride: int | None = None) -> list[int]:
    """Evenly spaced indices (`count`), or every `stride`-th frame."""
    if total <= 0:
        return []
    if stride:
        return list(range(0, total, stride))
    count = min(count or 32, total)
    return sorted(set(np.linspace(0, total - 1, count).round().astype(int).tolist()))


def sample_frames(path: str, *, count: int | None = 32, stride: int | None = None
                  ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, RGB frame) for the sampled frames of a video file."""
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise CorruptImageError(f"{path}: cannot open video")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = frame_indices(total, count=count, stride=stride)
        if not wanted:
            raise CorruptImageError(f"{path}: video has no frames")
        position, produced = 0, 0
        for index in wanted:
            if index - position > _SEEK_GAP:
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                position = index
            while position < index:  # grab() skips colour conversion of unwanted frames
                if not cap.grab():
                    break
                position += 1
            ok, frame = cap.read()
            if not ok:
                break
            position += 1
            produced += 1
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if produced == 0:
            raise CorruptImageError(f"{path}: no frame could be decoded")
    finally:
        cap.release()
