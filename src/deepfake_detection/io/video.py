"""Frame sampling from videos: decode only what is needed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from deepfake_detection.errors import CorruptImageError, DecompressionBombError

# Seeking re-decodes from the previous keyframe, so it only pays off for long gaps.
_SEEK_GAP = 48


_MAX_DECLARED = 10**8  # a larger declared frame count is garbage (an unset duration)


def declared_frame_count(cap: Any) -> int | None:
    """The frame count the container declares, or None when it does not say or says garbage (FFmpeg
    reports 0, a negative number or ~1e18 for streams and files without a duration)."""
    declared = float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
    return int(declared) if 0 < declared < _MAX_DECLARED else None


def declared_fps(cap: Any) -> float | None:
    """The frame rate the container declares, or None when it does not say or says nonsense."""
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if 0 < fps < 1000 else None


@dataclass(frozen=True)
class VideoInfo:
    frame_count: int  # declared by the container, or counted by decoding when it does not say
    fps: float | None  # None when the container does not say
    width: int
    height: int
    seekable: bool = True  # False: the length was not declared, so seeking by frame is not trusted


def _open(path: str) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise CorruptImageError(f"{path}: cannot open video")
    return cap


def video_info(path: str, *, max_pixels: int | None = None) -> VideoInfo:
    """Frame count, frame rate and size of a video file. Files that do not declare their length
    (WebM recorded by browsers or streamed to disk) are counted by decoding them once. Frames over
    `max_pixels` raise DecompressionBombError from the declared size, before any frame is decoded."""
    cap = _open(path)
    try:
        size = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if max_pixels is not None and size[0] * size[1] > max_pixels:
            raise DecompressionBombError(f"{path}: {size[0]}x{size[1]} frames exceed the limit of "
                                         f"{max_pixels} pixels")
        declared = declared_frame_count(cap)
        count = declared or 0
        while declared is None and cap.grab():  # grab(): no colour conversion
            count += 1
        return VideoInfo(count, declared_fps(cap), *size, seekable=declared is not None)
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


def sample_frames(path: str, *, count: int | None = 32, stride: int | None = None,
                  info: VideoInfo | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, RGB frame) for the sampled frames of a video file (`info`: video_info(path),
    when the caller has it already). A frame that cannot be decoded (a damaged or truncated file) is
    skipped and sampling goes on at the next wanted frame, so fewer frames than wanted may come."""
    info = info or video_info(path)
    wanted = frame_indices(info.frame_count, count=count, stride=stride)
    if not wanted:
        raise CorruptImageError(f"{path}: video has no frames")
    cap = _open(path)
    try:
        position, produced, lost = 0, 0, False  # lost: a read failed, the decoder's position is unknown
        for index in wanted:
            if info.seekable and (lost or index - position > _SEEK_GAP):
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                position, lost = index, False
            elif lost:  # without a declared length seeking by frame is not trusted: stop here
                break
            while position < index and cap.grab():  # grab() skips colour conversion of unwanted frames
                position += 1
            ok, frame = cap.read() if position == index else (False, None)
            # Past a truncation FFmpeg may "succeed" with the last good frame again: its position tells.
            if ok and info.seekable and 0 < cap.get(cv2.CAP_PROP_POS_FRAMES) < index - 1:
                ok = False
            if not ok or frame is None:
                lost = True
                continue
            position += 1
            produced += 1
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if produced == 0:
            raise CorruptImageError(f"{path}: no frame could be decoded")
    finally:
        cap.release()
