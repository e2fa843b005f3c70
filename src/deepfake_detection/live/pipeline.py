"""The live loop: detect every k frames (on a worker thread, k adapted to load), track in between,
classify the tracks' faces in one batch (each track re-scored every m frames or when it moved), smooth
per track, and yield one FrameResult per frame.

Cost model that sets the defaults (one 720p face, 2 cores): decoding ~4-7 ms runs on the capture
thread; RetinaFace ~11 ms runs on the detector thread every k >= 2 frames; a crop + classification
(~6 ms) runs on this thread for the tracks that are due. So no stage decides the frame rate alone.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from deepfake_detection.faces import Face, crop_face
from deepfake_detection.faces.quality import REFERENCE_SIZE, crop_sharpness
from deepfake_detection.faces.tracking import IoUTracker, Track, iou
from deepfake_detection.infer.predictor import Predictor, _ms
from deepfake_detection.infer.results import FrameResult, LiveFace
from deepfake_detection.live.capture import Frame
from deepfake_detection.live.smoothing import Smoother


@dataclass
class LiveConfig:
    min_detect_every: int = 2  # k never goes below this ...
    max_detect_every: int = 15  # ... nor above this (a new face waits at most this many frames)
    detect_share: float = 0.5  # k is chosen so that detection takes about this share of one core
    rescore_every: int = 3  # m: a track's face is classified again after this many frames ...
    rescore_iou: float = 0.6  # ... or sooner when its box moved (IoU with the scored box below this)
    window: int = 5  # smoothing: moving average over this many scores per track
    margin: float = 0.05  # smoothing: hysteresis around the threshold
    iou_threshold: float = 0.3  # tracking: detections match tracks above this IoU
    max_misses: int = 2  # tracking: detection rounds a track survives unmatched
    max_faces: int = 8  # faces per frame, biggest first
    async_detect: bool = True  # False: detect on this thread (deterministic; the plain fallback)

    def __post_init__(self) -> None:
        if not 1 <= self.min_detect_every <= self.max_detect_every:
            raise ValueError("need 1 <= min_detect_every <= max_detect_every")
        if self.rescore_every < 1 or self.window < 1 or self.max_faces < 1:
            raise ValueError("rescore_every, window and max_faces must be >= 1")


@dataclass
class _TrackState:
    smoother: Smoother
    scored_frame: int = -(10**9)
    scored_box: np.ndarray | None = None
    raw: float | None = None
    sharpness: float | None = None  # of the latest scored crop (faces/quality.py)


class LivePipeline:
    """Turns frames into FrameResults; one instance per video source (it holds the tracks)."""

    def __init__(self, predictor: Predictor, config: LiveConfig | None = None) -> None:
        self.predictor = predictor
        self.config = config or LiveConfig()
        self.tracker = IoUTracker(iou_threshold=self.config.iou_threshold, max_misses=self.config.max_misses)
        self.detect_every = self.config.min_detect_every
        self._states: dict[int, _TrackState] = {}
        self._detect_ms: float | None = None  # moving averages that drive k
        self._frame_ms: float | None = None
        self.detections = 0
        self.detect_ms_total = 0.0  # time spent in the detector, whichever thread ran it
        self._detect_threads: set[int] = set()  # threads that have run a detection already

    # --- stages ---------------------------------------------------------------------------------

    def _detect(self, rgb: np.ndarray) -> tuple[list[Face], float, bool]:
        """(faces, milliseconds, whether this was the calling thread's first detection)."""
        thread = threading.get_ident()
        first = thread not in self._detect_threads
        self._detect_threads.add(thread)
        start = time.perf_counter()
        faces = self.predictor.detect_faces(rgb)[: self.config.max_faces]
        return faces, _ms(start), first

    def _warm_worker(self, shape: tuple[int, ...]) -> None:
        """The detector thread's first task: create its detector session and run it once on a frame of
        the source's size (~90 ms), in parallel with the first detection on the main thread, instead
        of inside the first real detection."""
        self.predictor.detect_faces(np.zeros(shape, np.uint8))

    def _apply(self, faces: list[Face], frame_index: int, ms: float, first: bool) -> None:
        self.tracker.update(faces, frame_index)
        self.detections += 1
        self.detect_ms_total += ms
        if not first:  # a thread's first run includes the runtime's warm-up: it would inflate k for seconds
            self._detect_ms = ms if self._detect_ms is None else 0.7 * self._detect_ms + 0.3 * ms
        alive = {t.id for t in self.tracker.tracks}
        for track_id in [i for i in self._states if i not in alive]:
            del self._states[track_id]

    def _adapt(self) -> None:
        """k = detector time / (share x frame time): the detector keeps up without owning a core."""
        if self._detect_ms is None or not self._frame_ms:
            return
        k = math.ceil(self._detect_ms / (self.config.detect_share * self._frame_ms))
        self.detect_every = min(max(k, self.config.min_detect_every), self.config.max_detect_every)

    def _due(self, tracks: list[Track], frame_index: int) -> list[Track]:
        """Tracks to classify now: new ones, moved ones, then the most overdue, at most
        ceil(tracks / m) besides the new ones, so several faces are re-scored on different frames."""
        cfg = self.config
        new, moved, overdue = [], [], []
        for track in tracks:
            state = self._states.get(track.id)
            if track.misses:  # not found by the last detection: its box may be background now
                continue
            if state is None or state.scored_box is None:
                new.append(track)
            elif iou(track.box, state.scored_box) < cfg.rescore_iou:
                moved.append(track)
            elif frame_index - state.scored_frame >= cfg.rescore_every:
                overdue.append(track)
        overdue.sort(key=lambda t: self._states[t.id].scored_frame)
        return new + (moved + overdue)[: math.ceil(len(tracks) / cfg.rescore_every)]

    def _classify(self, frame: Frame, tracks: list[Track], timings: dict[str, float]) -> set[int]:
        spec = self.predictor.spec
        start = time.perf_counter()
        # Crops come from the BGR frame; only the small crop is converted to the model's RGB.
        crops = [cv2.cvtColor(crop_face(frame.image, t.face, spec.input_size, spec.crop), cv2.COLOR_BGR2RGB)
                 for t in tracks]
        # Sharpness is read at REFERENCE_SIZE whatever the model (faces/quality.py): the bundled model's
        # crops are reused, another model's faces are cut once more at that size.
        at_reference = crops if spec.input_size == REFERENCE_SIZE else [
            cv2.cvtColor(crop_face(frame.image, t.face, REFERENCE_SIZE, spec.crop), cv2.COLOR_BGR2RGB)
            for t in tracks]
        timings["crop"] = _ms(start)
        start = time.perf_counter()
        probs = self.predictor.probabilities(crops)
        timings["classify"] = _ms(start)
        for track, p, crop in zip(tracks, probs, at_reference, strict=True):
            state = self._states.get(track.id)
            if state is None:
                state = self._states[track.id] = _TrackState(
                    Smoother(spec.threshold, window=self.config.window, margin=self.config.margin))
            state.smoother.update(float(p))
            state.raw, state.scored_frame, state.scored_box = float(p), frame.index, track.box.copy()
            state.sharpness = crop_sharpness(crop)
        return {t.id for t in tracks}

    # --- the loop -------------------------------------------------------------------------------

    def run(self, frames: Iterable[Frame]) -> Generator[tuple[Frame, FrameResult], None, None]:
        """Yield (frame, result) per frame; drawing on `frame.image` afterwards is safe."""
        cfg = self.config
        pool = ThreadPoolExecutor(1, thread_name_prefix="dfd-detect") if cfg.async_detect else None
        pending: Future[tuple[list[Face], float, bool]] | None = None
        pending_index = -1
        last_submit = -(10**9)
        last_yield: float | None = None
        try:
            for frame in frames:
                start_frame = time.perf_counter()
                timings: dict[str, float] = {"capture": frame.read_ms}
                detected = False
                if pending is not None and pending.done():
                    faces, ms, first = pending.result()
                    self._apply(faces, pending_index, ms, first)
                    pending, detected = None, True
                    timings["detect_async"] = ms  # spent on the detector thread, not in this frame
                # Young tracks (no reliable velocity yet) are re-detected at the fastest rate.
                young = any(t.hits < 3 for t in self.tracker.tracks)
                every = self.config.min_detect_every if young else self.detect_every
                if pending is None and frame.index - last_submit >= every:
                    # A copy in RGB: the detector thread must not see the overlay drawn later on this frame.
                    rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
                    last_submit = frame.index
                    if pool is not None and self.detections:
                        pending, pending_index = pool.submit(self._detect, rgb), frame.index
                    else:  # the first detection is waited for: no empty frames at the start
                        if pool is not None:
                            pool.submit(self._warm_worker, rgb.shape)
                        faces, ms, first = self._detect(rgb)
                        self._apply(faces, frame.index, ms, first)
                        detected = True
                        timings["detect"] = ms
                start = time.perf_counter()
                h, w = frame.image.shape[:2]
                tracks = [t for t in self.tracker.advance(frame.index)  # those still on screen
                          if t.box[2] > 0 and t.box[3] > 0 and t.box[0] < w and t.box[1] < h]
                timings["track"] = _ms(start)
                scored = self._classify(frame, self._due(tracks, frame.index), timings)
                result = FrameResult(frame.index, frame.time, self.predictor.spec.threshold,
                                     self._faces(tracks, scored, w, h), detect_every=self.detect_every,
                                     detected=detected, timings_ms=timings)
                now = time.perf_counter()
                timings["pipeline"] = (now - start_frame) * 1000.0  # this thread's time on the frame
                if last_yield is not None:
                    interval = (now - last_yield) * 1000.0
                    previous = interval if self._frame_ms is None else self._frame_ms
                    self._frame_ms = 0.9 * previous + 0.1 * interval
                    self._adapt()
                result.fps = 1000.0 / self._frame_ms if self._frame_ms else 0.0
                last_yield = now
                yield frame, result
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _faces(self, tracks: list[Track], scored: set[int], w: int, h: int) -> list[LiveFace]:
        out = []
        for track in tracks:
            state = self._states.get(track.id)
            p = None if state is None else state.smoother.probability
            if state is None or p is None:
                continue
            box = np.clip(track.box, 0, [w, h, w, h])
            lm = track.face.landmarks
            out.append(LiveFace(box=[float(v) for v in box], detector_score=float(track.face.score),
                                fake_probability=p, landmarks=None if lm is None else lm.tolist(),
                                sharpness=state.sharpness,
                                track_id=track.id, label=state.smoother.label, raw_probability=state.raw,
                                scored=track.id in scored, lost=track.misses > 0))
        return out
