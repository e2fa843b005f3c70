"""Video verdicts: sampled frames -> face tracks -> one robust fake probability per track and video.

The aggregate, and why:
- a track's score is the 20 % trimmed mean of its frame scores (the lowest and highest 20 % are
  dropped, the rest averaged). A few bad frames (motion blur, a half-occluded or badly boxed face,
  a compression burst) push single-frame scores to either extreme; trimming ignores them while
  still averaging most frames, which is steadier than the median on short tracks.
- the video's score is the highest track score among tracks seen in enough sampled frames
  (>= 3 and >= 10 % of them): one fake face makes the video fake, as one fake face makes an image
  fake, but a face seen in one or two frames (often a false detection) cannot decide the verdict
  alone. When no track is long enough, the longest tracks are used.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from deepfake_detection.errors import DFDError
from deepfake_detection.faces import Face, FaceDetector, crop_face
from deepfake_detection.faces.quality import faces_sharpness
from deepfake_detection.faces.tracking import IoUTracker
from deepfake_detection.infer.predictor import Predictor, _ms
from deepfake_detection.infer.results import FaceResult, TrackResult, VideoResult, blurry_faces_warning
from deepfake_detection.io.video import frame_indices, sample_frames, video_info

log = logging.getLogger(__name__)

TRIM = 0.2
MIN_TRACK_FRAMES = 3
MIN_TRACK_FRACTION = 0.1


def trimmed_mean(scores: list[float] | np.ndarray, trim: float = TRIM) -> float:
    """Mean of the scores left after dropping the lowest and highest `trim` fraction."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if s.size == 0:
        raise ValueError("trimmed_mean of no scores")
    k = int(s.size * trim)
    return float(s[k : s.size - k].mean())


def video_probability(tracks: list[TrackResult], frames: int) -> float | None:
    """Max track score over the tracks seen in enough frames (module docstring)."""
    if not tracks:
        return None
    longest = max(len(t.scores) for t in tracks)
    need = min(max(MIN_TRACK_FRAMES, math.ceil(MIN_TRACK_FRACTION * frames)), longest)
    return max(t.fake_probability for t in tracks if len(t.scores) >= need)


def timeline(tracks: list[TrackResult]) -> list[dict[str, float]]:
    """Per second of video: the highest per-track mean score in that second, and how many faces."""
    per_second: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for track in tracks:
        for t, s in zip(track.times, track.scores, strict=True):
            per_second[int(t)][track.id].append(s)
    return [{"second": second, "faces": len(by_track),
             "fake_probability": round(max(float(np.mean(v)) for v in by_track.values()), 6)}
            for second, by_track in sorted(per_second.items())]


@dataclass
class _TrackScores:
    frames: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    sharpness: list[float] = field(default_factory=list)  # of each crop scored (faces/quality.py)
    best: Face | None = None  # the most confident detection: the face reported for this track


def predict_video(predictor: Predictor, detector: FaceDetector, source: str | os.PathLike[str], *,
                  frames: int | None = 32, stride: int | None = None,
                  progress: Callable[[int, int], None] | None = None, path: str | None = None) -> VideoResult:
    """Score a video file; never raises for bad input (an "error" result instead). Called by
    `Predictor.predict_video`, which hands over a detector no other thread is using.

    `frames` evenly spaced frames are scored (or every `stride`-th frame when `stride` is given);
    `progress(done, total)` is called after each sampled frame (its own exceptions propagate, so a
    caller can cancel by raising).
    """
    shown = path if path is not None else str(source)
    result = VideoResult(path=shown, status="error", threshold=predictor.spec.threshold,
                         model=predictor.model_info)
    try:
        _score(predictor, detector, str(source), result, frames=frames, stride=stride,
               progress=progress)
    except DFDError as exc:
        result.status, result.error = "error", f"{type(exc).__name__}: {exc}"
    except (ValueError, OSError, cv2.error) as exc:
        result.status, result.error = "error", f"{type(exc).__name__}: {exc}"
    except _CallbackError as exc:  # the caller's own exception (e.g. a cancel): theirs, unchanged
        raise exc.original from exc.original.__cause__
    except Exception as exc:  # a bug or an unexpected library error must not stop a batch
        log.exception("unexpected error on %s", shown)
        result.status, result.error = "error", f"internal error ({type(exc).__name__}): {exc}"
    return result


class _CallbackError(Exception):
    """Carries an exception raised by the progress callback past predict_video's broad handlers."""

    def __init__(self, original: Exception) -> None:
        super().__init__(original)
        self.original = original


def _score(predictor: Predictor, detector: FaceDetector, source: str, result: VideoResult, *,
           frames: int | None, stride: int | None, progress: Callable[[int, int], None] | None) -> None:
    if (frames is not None and frames < 1) or (stride is not None and stride < 1):
        raise ValueError("frames and stride must be >= 1")
    if not Path(source).is_file():
        raise FileNotFoundError("no such file")
    info = video_info(source, max_pixels=predictor.max_pixels)
    result.image_size = (info.width, info.height)
    result.fps = info.fps
    if info.fps and info.frame_count:
        result.duration_s = info.frame_count / info.fps
    total = len(frame_indices(info.frame_count, count=frames, stride=stride))
    # Sampled frames can be far apart: a loose IoU threshold, the velocity guess does the rest.
    tracker = IoUTracker(iou_threshold=0.1, max_misses=2)
    tracks: dict[int, _TrackScores] = defaultdict(_TrackScores)
    pending: list[tuple[int, int, np.ndarray]] = []  # (track id, frame index, crop)
    timings = result.timings_ms
    spec = predictor.spec

    def flush() -> None:
        if not pending:
            return
        start = time.perf_counter()
        probs = predictor.probabilities([crop for _, _, crop in pending])
        timings["classify"] = timings.get("classify", 0.0) + _ms(start)
        for (track_id, index, _), p in zip(pending, probs, strict=True):
            entry = tracks[track_id]
            entry.frames.append(index)
            entry.scores.append(float(p))
        pending.clear()

    done = 0
    start = time.perf_counter()
    for index, rgb in sample_frames(source, count=frames, stride=stride, info=info):
        timings["decode"] = timings.get("decode", 0.0) + _ms(start)
        start = time.perf_counter()
        faces = detector.detect(rgb)
        timings["detect"] = timings.get("detect", 0.0) + _ms(start)
        start = time.perf_counter()
        for track in tracker.update(faces, index):
            if track.last_detection != index:  # carried, not seen in this frame: nothing to score
                continue
            entry = tracks[track.id]
            entry.boxes.append([float(v) for v in track.face.box])
            if entry.best is None or track.face.score > entry.best.score:
                entry.best = track.face
            crop = crop_face(rgb, track.face, spec.input_size, spec.crop)
            entry.sharpness += faces_sharpness(rgb, [track.face], spec.crop, [crop])
            pending.append((track.id, index, crop))
        timings["crop"] = timings.get("crop", 0.0) + _ms(start)
        if len(pending) >= predictor.batch_size:
            flush()
        done += 1
        if progress is not None:
            try:
                progress(done, max(total, done))
            except Exception as exc:
                raise _CallbackError(exc) from exc
        start = time.perf_counter()
    flush()
    timings["total"] = sum(timings.values())
    result.frames, result.frames_requested = done, total
    if done < total:  # frames that did not decode: a damaged or truncated file
        result.warnings.append(f"only {done} of {total} sampled frames could be decoded")
    result.tracks = [
        TrackResult(id=track_id, fake_probability=trimmed_mean(entry.scores), frame_indices=entry.frames,
                    scores=entry.scores, first_box=entry.boxes[0], last_box=entry.boxes[-1],
                    times=[i / info.fps for i in entry.frames] if info.fps else [])
        for track_id, entry in sorted(tracks.items()) if entry.scores
    ]
    result.faces = [
        FaceResult(box=[float(v) for v in entry.best.box], detector_score=float(entry.best.score),
                   fake_probability=track.fake_probability, sharpness=float(np.median(entry.sharpness)),
                   landmarks=None if entry.best.landmarks is None else entry.best.landmarks.tolist())
        for track, entry in ((t, tracks[t.id]) for t in result.tracks) if entry.best is not None
    ]
    if warning := blurry_faces_warning(result.faces):  # a track's median crop: blurry most of the time
        result.warnings.append(warning)
    result.timeline = timeline(result.tracks)
    if result.tracks:
        result.status = "ok"
        result.fake_probability = video_probability(result.tracks, done)
    else:
        result.status = "no_face"
