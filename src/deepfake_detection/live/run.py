"""`dfd live`: capture -> pipeline -> overlay -> window / annotated video / JSONL, stopped cleanly by
the end of the source, `q` in the window, or Ctrl-C (files are then closed and complete)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import deque
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from deepfake_detection.errors import OutputError
from deepfake_detection.infer.predictor import Predictor, _ms
from deepfake_detection.infer.render import draw_live
from deepfake_detection.io.atomic import atomic_open, atomic_path, check_writable
from deepfake_detection.live.capture import Capture, Opener, open_source
from deepfake_detection.live.pipeline import LiveConfig, LivePipeline

log = logging.getLogger(__name__)
WINDOW = "dfd live"
# Codecs OpenCV's wheels can write everywhere (they carry no H.264 encoder).
FOURCC = {".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


__all__ = ["OutputError", "LiveSummary", "display_available", "run_live"]


class _Discard(Exception):  # noqa: N818 - not an error: raised inside the ExitStack to drop the outputs
    """No frame was written: the temporary output files are removed instead of published."""


def display_available() -> bool:
    """A window can be shown: an X11/Wayland display on Linux; assumed on Windows and macOS."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


@dataclass
class LiveSummary:
    frames: int = 0
    dropped: int = 0  # live sources: frames skipped to stay current
    reopens: int = 0
    tracks: int = 0  # distinct track ids seen
    stopped_by: str = "end"  # end, q, interrupt, max-frames, error
    error: str | None = None
    seconds: float = 0.0
    # per frame, end to end: from the capture thread starting to read it to the annotated frame handed
    # to the file / window; the last 100,000 frames (about an hour at 30 fps: bounded memory)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    stage_ms: dict[str, float] = field(default_factory=dict)  # per-frame means
    detections: int = 0
    detect_ms: float = 0.0  # mean time of one detection

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else 0.0

    def describe(self) -> str:
        text = (f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps), latency p50 "
                f"{self.percentile(50):.1f} ms p95 {self.percentile(95):.1f} ms, {self.tracks} face tracks")
        if self.dropped:
            text += f", {self.dropped} frames dropped to stay live"
        if self.reopens:
            text += f", stream reopened {self.reopens}x"
        return text + f"; stopped by {self.stopped_by}"


class _VideoSink:
    """Annotated video written to a temporary file, renamed over the target once closed (playable)."""

    @staticmethod
    def check(path: str) -> None:
        """Raise OutputError at once for a video that could not be written at the end."""
        if Path(path).suffix.lower() not in FOURCC:
            raise OutputError(f"cannot write video {path}: use one of {', '.join(FOURCC)}")
        check_writable(path)

    def __init__(self, stack: ExitStack, path: str, fps: float) -> None:
        suffix = Path(path).suffix.lower()
        self.path, self.fps, self.fourcc = path, fps, FOURCC[suffix]
        self._tmp = stack.enter_context(atomic_path(path, suffix=suffix))
        self._writer: Any = None
        stack.callback(self.close)  # runs before atomic_path publishes the file

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            h, w = image.shape[:2]
            fourcc = cv2.VideoWriter.fourcc(*self.fourcc)
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                raise OutputError(f"cannot write video {self.path}")
        self._writer.write(image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def run_live(predictor: Predictor, source: str | int, *, config: LiveConfig | None = None,
             realtime: bool = False, display: bool | None = None, save: str | None = None,
             jsonl: str | None = None, max_frames: int | None = None, opener: Opener = open_source,
             queue_size: int = 8) -> LiveSummary:
    """Run the live loop until the source ends or the user stops it; returns what happened.

    Bad output paths raise OutputError before the source is opened. A failure while processing
    (detector, model) ends the run with `summary.error` set; the frames written so far are kept.
    When no frame was written, no output file is published. `queue_size`: decoded frames a file
    source may queue ahead of processing."""
    if save:
        _VideoSink.check(save)
    if jsonl:
        check_writable(jsonl)
    show = display_available() if display is None else display
    summary = LiveSummary()
    pipeline = LivePipeline(predictor, config)
    sums: dict[str, float] = {}
    track_ids: set[int] = set()
    try:
        with ExitStack() as stack:
            capture = stack.enter_context(Capture(source, realtime=realtime, opener=opener,
                                                  queue_size=queue_size))
            sink = _VideoSink(stack, save, capture.fps or 25.0) if save else None
            lines: TextIO | None = None
            if jsonl:
                lines = stack.enter_context(atomic_open(jsonl, "w", encoding="utf-8"))
            if show:
                show = _open_window()
                if show:
                    stack.callback(cv2.destroyAllWindows)
            start = time.perf_counter()
            window_seen = False  # macOS reports the window property as -1 always: never "closed" then
            try:
                results = stack.enter_context(closing(pipeline.run(capture)))  # stops the detector thread
                for frame, result in results:
                    t0 = time.perf_counter()
                    draw_live(frame.image, result)
                    result.timings_ms["draw"] = _ms(t0)
                    summary.latencies_ms.append((time.perf_counter() - frame.stamp) * 1000.0)
                    for key, value in result.timings_ms.items():
                        sums[key] = sums.get(key, 0.0) + value
                    if sink is not None:
                        sink.write(frame.image)
                    if lines is not None:
                        lines.write(json.dumps(result.to_dict()) + "\n")
                    track_ids.update(f.track_id for f in result.faces)
                    summary.frames += 1
                    if show:
                        cv2.imshow(WINDOW, frame.image)
                        pressed = cv2.waitKey(1) & 0xFF
                        visible = _window_visible()
                        window_seen = window_seen or visible
                        if pressed in (ord("q"), 27) or (window_seen and not visible):
                            summary.stopped_by = "q"
                            break
                    if max_frames is not None and summary.frames >= max_frames:
                        summary.stopped_by = "max-frames"
                        break
            except KeyboardInterrupt:  # a clean stop: the ExitStack still closes and publishes every file
                summary.stopped_by = "interrupt"
            except OutputError:
                raise
            except Exception as exc:  # the detector or the model failed: keep what was written
                log.debug("live processing failed", exc_info=True)
                summary.stopped_by = "error"
                summary.error = f"processing failed ({type(exc).__name__}): {exc}"
            summary.seconds = time.perf_counter() - start
            summary.error = summary.error or capture.error
            if capture.error and summary.stopped_by == "end":
                summary.stopped_by = "error"
            summary.dropped, summary.reopens = capture.dropped, capture.reopens
            if not summary.frames:
                if summary.stopped_by in ("end", "error") and not summary.error:
                    summary.stopped_by, summary.error = "error", f"no frame could be decoded from {source}"
                raise _Discard  # an empty video would not even play: publish nothing
    except _Discard:
        pass
    summary.tracks = len(track_ids)
    summary.stage_ms = {k: v / max(summary.frames, 1) for k, v in sums.items()
                        if k not in ("detect", "detect_async")}  # detection: per call, below
    summary.detections = pipeline.detections
    summary.detect_ms = pipeline.detect_ms_total / max(pipeline.detections, 1)
    return summary


def _window_visible() -> bool:
    try:
        return cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) >= 1
    except cv2.error:  # some backends raise once the window is gone
        return False


def _open_window() -> bool:
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        return True
    except cv2.error as exc:  # OpenCV built without GUI support, or no usable display
        log.warning("no window can be opened (%s); running headless", str(exc).strip().splitlines()[-1])
        return False
