"""Threaded frame capture from a webcam, a video file or a network stream.

Decoding runs on its own thread so that it overlaps detection and classification:
- live sources (webcams, rtsp/http/... streams, and files with `realtime=True`) keep only the newest
  frame: when processing is slower than the source, old frames are dropped instead of piling up
  as lag;
- files (without `realtime`) go through a small bounded queue: every frame is processed, and decoding
  waits when it runs ahead;
- a network stream that stops delivering is reopened with exponential backoff.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from deepfake_detection.errors import DFDError
from deepfake_detection.io.video import declared_fps, declared_frame_count

log = logging.getLogger(__name__)

SourceKind = Literal["webcam", "stream", "file"]
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


class SourceError(DFDError):
    """A video source cannot be opened or read."""


class VideoSource(Protocol):
    """What we use of cv2.VideoCapture (tests pass doubles)."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's names
    def read(self) -> tuple[bool, Any]: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


Opener = Callable[[str | int, SourceKind], VideoSource]


def parse_source(text: str | int | os.PathLike[str]) -> str | int:
    """"0", "1", ... are webcam indices; anything else is a file path or a URL."""
    if isinstance(text, int):
        return text
    text = os.fspath(text)
    return int(text) if text.strip().isdigit() else text


def source_kind(source: str | int) -> SourceKind:
    if isinstance(source, int) or source.startswith("/dev/video"):  # an index, or a V4L2 device path
        return "webcam"
    if source.lower().startswith(STREAM_SCHEMES):
        return "stream"
    return "file"


def open_source(source: str | int, kind: SourceKind) -> VideoSource:
    """cv2.VideoCapture for `source`; webcams get a 1-frame driver buffer (less lag)."""
    cap = cv2.VideoCapture(str(source), cv2.CAP_FFMPEG) if kind == "stream" else cv2.VideoCapture(source)
    if kind == "webcam" and cap.isOpened():
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return cap


@dataclass
class Frame:
    index: int  # position in the source: for files the frame number, for live sources a counter
    image: np.ndarray  # BGR, as OpenCV decodes it
    time: float  # seconds: index / fps for files, since the first frame for live sources
    read_ms: float  # time spent decoding this frame (capture stage)
    stamp: float = 0.0  # time.perf_counter() when the capture thread started reading it (end-to-end latency)


def _not_a_video_file(path: str) -> str:
    """Why `path` cannot be read as a video file, in the user's terms."""
    if Path(path).is_dir():
        return (f"{path} is a folder: --source takes one video file, a webcam index or a stream URL "
                f"(score the videos of a folder with dfd detect {path})")
    if os.path.islink(path):
        return f"{path}: a broken symbolic link or a link loop"
    if os.path.exists(path):
        return f"{path}: not a regular file"
    return f"video file not found: {path}"


class Capture:
    """Iterate frames from `source` ("0" or 0 = first webcam, a file, or a stream URL).

    Raises SourceError at construction when the source does not open. Use as a context manager,
    or call `close()`: it stops the thread and releases the device.
    """

    def __init__(self, source: str | int | os.PathLike[str], *, realtime: bool = False,
                 opener: Opener = open_source, queue_size: int = 8, backoff: float = 0.5,
                 max_backoff: float = 8.0, max_reopens: int | None = None) -> None:
        self.source = parse_source(source)
        self.kind = source_kind(self.source)
        self.live = self.kind != "file" or realtime
        self.realtime = realtime
        self._opener = opener
        self.backoff, self.max_backoff, self.max_reopens = backoff, max_backoff, max_reopens
        self.error: str | None = None  # why capture ended early (None: end of file or close())
        self.dropped = 0  # live sources: frames replaced before the consumer took them
        self.reopens = 0
        # Reopen backoff: grows over consecutive failed reopens, reset only once a frame is delivered
        # (a server that accepts connections but sends nothing must not be retried at full speed).
        self._delay, self._tries = backoff, 0
        if self.kind == "file" and not Path(str(self.source)).is_file():
            raise SourceError(_not_a_video_file(str(self.source)))
        self._cap = self._open()
        if self._cap is None:
            what = {"webcam": f"webcam {self.source}", "stream": f"stream {self.source}",
                    "file": f"video file {self.source}"}[self.kind]
            hint = " (is a camera connected, and is it free?)" if self.kind == "webcam" else ""
            raise SourceError(f"cannot open {what}{hint}")
        self.fps = declared_fps(self._cap)
        # A URL with a known length is a remote file, not a live stream: its end is the end (a reopen
        # would replay it from the start).
        self.finite = self.kind == "stream" and declared_frame_count(self._cap) is not None
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        self._stop = threading.Event()
        self._done = False
        self._latest: Frame | None = None
        self._cond = threading.Condition()
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=max(1, queue_size))
        self._thread = threading.Thread(target=self._run, name="dfd-capture", daemon=True)
        self._thread.start()

    # --- consumer side -----------------------------------------------------------------------

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame (live: the newest one), or None when the source has ended."""
        if not self.live:
            while True:
                try:
                    return self._queue.get(timeout=0.1 if timeout is None else timeout)
                except queue.Empty:  # _done: every frame and the end marker were taken already
                    if timeout is not None or self._stop.is_set() or self._done:
                        return None
        with self._cond:
            if not self._cond.wait_for(lambda: self._latest is not None or self._done, timeout):
                return None
            frame, self._latest = self._latest, None
            return frame

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            with suppress(queue.Empty):  # a full queue would keep the reader blocked in put()
                self._queue.get_nowait()
            self._thread.join(timeout=0.05)
        if self._thread.is_alive():  # stuck in a network read: leave the daemon thread, never free under it
            log.warning("capture thread for %s did not stop within %.0f s", self.source, timeout)
        elif self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reader thread ---------------------------------------------------------------------

    def _open(self) -> VideoSource | None:
        try:
            cap = self._opener(self.source, self.kind)
        except Exception as exc:  # a broken backend or a test double: a failed open, not a crash
            log.debug("opening %s failed: %s", self.source, exc)
            return None
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def _reopen(self) -> bool:
        """Reopen a dropped stream, waiting backoff, 2x backoff, ... (at most max_backoff) between tries;
        at most max_reopens tries since the last delivered frame."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        while not self._stop.is_set():
            if self.max_reopens is not None and self._tries >= self.max_reopens:
                return False
            log.warning("stream %s dropped; reopening in %.1f s", self.source, self._delay)
            if self._stop.wait(self._delay):
                return False
            self._tries += 1
            self._cap = self._open()
            self._delay = min(self._delay * 2, self.max_backoff)
            if self._cap is not None:
                self.reopens += 1
                return True
        return False

    def _run(self) -> None:
        index, start = 0, time.monotonic()
        try:
            while not self._stop.is_set():
                if self.kind == "file" and self.realtime and self.fps:
                    # Wait for the frame's time before reading it, as a camera delivers it then: its
                    # latency starts when it is due, not when it was decoded ahead of the clock.
                    self._stop.wait(max(0.0, start + index / self.fps - time.monotonic()))
                t0 = time.perf_counter()
                try:
                    ok, image = self._cap.read() if self._cap is not None else (False, None)
                except Exception as exc:  # some backends raise on a dead connection
                    log.debug("read from %s failed: %s", self.source, exc)
                    ok, image = False, None
                read_ms = (time.perf_counter() - t0) * 1000.0
                if not ok or image is None:
                    if self.kind == "stream" and not self.finite and self._reopen():
                        continue
                    if self.kind == "stream" and not self.finite and not self._stop.is_set():
                        self.error = f"stream {self.source} dropped and could not be reopened"
                    elif self.kind == "webcam" and not self._stop.is_set():
                        self.error = f"webcam {self.source} stopped delivering frames"
                    break
                if self.kind == "file":
                    t = index / self.fps if self.fps else time.monotonic() - start
                else:
                    t = time.monotonic() - start
                self._deliver(Frame(index, image, t, read_ms, stamp=t0))
                self._delay, self._tries = self.backoff, 0
                index += 1
        except Exception as exc:  # a bug or a backend failure: end the source with a message, not silently
            log.exception("capture from %s failed", self.source)
            self.error = f"capture failed ({type(exc).__name__}): {exc}"
        finally:
            self._finish()

    def _deliver(self, frame: Frame) -> None:
        if self.live:
            with self._cond:
                self.dropped += self._latest is not None
                self._latest = frame
                self._cond.notify()
            return
        while not self._stop.is_set():
            try:
                self._queue.put(frame, timeout=0.1)
                return
            except queue.Full:
                continue

    def _finish(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()
        if not self.live:
            while not self._stop.is_set():
                try:
                    self._queue.put(None, timeout=0.1)  # end marker
                    return
                except queue.Full:
                    continue
