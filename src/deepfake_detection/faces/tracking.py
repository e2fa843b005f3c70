"""IoU tracker with stable ids: faces found by the (occasional) detector become tracks that are
carried between detections with a constant-velocity guess.

OpenCV's correlation trackers cost more per frame at 720p than the detector saves, so between
detections a track only moves by its last measured velocity; the next detection corrects it. A track
that a detection did not find stops moving until it is found again (or ends).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from deepfake_detection.faces.types import Face


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = float(w * h)
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def shifted(face: Face, delta: np.ndarray) -> Face:
    """`face` with its box moved by `delta` (4 values); landmarks follow the box centre."""
    box = (face.box + delta).astype(np.float32)
    landmarks = None
    if face.landmarks is not None:
        centre = np.array([(delta[0] + delta[2]) / 2, (delta[1] + delta[3]) / 2], dtype=np.float32)
        landmarks = (face.landmarks + centre).astype(np.float32)
    return Face(box, face.score, landmarks)


@dataclass
class Track:
    id: int
    face: Face  # where the face is at `frame`: detected there, or carried forward
    frame: int
    last_detection: int  # frame of the last matched detection
    detected_face: Face  # that detection, unmoved: velocities are measured between detections
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))  # box change per frame
    hits: int = 1
    misses: int = 0  # detection rounds in a row without a match

    @property
    def box(self) -> np.ndarray:
        return self.face.box


def _centre_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between box centres in units of a's longer side, or inf when the sizes differ by > 1.5x."""
    side_a, side_b = max(a[2] - a[0], a[3] - a[1], 1e-3), max(b[2] - b[0], b[3] - b[1], 1e-3)
    if not 1 / 1.5 <= side_b / side_a <= 1.5:
        return float("inf")
    return float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2) / side_a)


class IoUTracker:
    """Greedy IoU association of detections to tracks; what IoU leaves unmatched is then paired by
    centre distance (at most `max_shift` face sizes, similar size): a face that moved further than
    its own width between two detections, before its velocity is known, keeps its id.

    `update(faces, frame)` may be called with a detection older than the tracks' current frame
    (the detector runs on a worker thread): tracks are moved back to that frame, matched, and moved
    forward again by `advance`.
    """

    def __init__(self, *, iou_threshold: float = 0.3, max_misses: int = 2, velocity_weight: float = 0.5,
                 max_tracks: int = 32, max_shift: float = 1.0) -> None:
        self.iou_threshold = iou_threshold
        self.max_shift = max_shift
        self.max_misses = max_misses
        self.velocity_weight = velocity_weight  # weight of the newest measurement (damps detector jitter)
        self.max_tracks = max_tracks
        self.tracks: list[Track] = []
        self._next_id = 1

    def advance(self, frame: int) -> list[Track]:
        """Move every track to `frame` by its velocity (forward or backward)."""
        for track in self.tracks:
            dt = frame - track.frame
            if dt:
                track.face = shifted(track.face, track.velocity * dt)
                track.frame = frame
        return self.tracks

    def update(self, faces: list[Face], frame: int) -> list[Track]:
        """Associate the detections of `frame`; returns the live tracks (positioned at `frame`)."""
        self.advance(frame)
        used_tracks: set[int] = set()
        used_faces: set[int] = set()

        def assign(pairs: list[tuple[float, int, int]], ok: Callable[[float], bool]) -> None:
            for value, ti, fi in pairs:
                if ok(value) and ti not in used_tracks and fi not in used_faces:
                    used_tracks.add(ti)
                    used_faces.add(fi)
                    self._match(self.tracks[ti], faces[fi], frame)

        assign(sorted(((iou(t.box, f.box), ti, fi) for ti, t in enumerate(self.tracks)
                       for fi, f in enumerate(faces)), reverse=True), lambda v: v >= self.iou_threshold)
        assign(sorted((_centre_shift(t.box, f.box), ti, fi) for ti, t in enumerate(self.tracks)
                      for fi, f in enumerate(faces) if ti not in used_tracks and fi not in used_faces),
               lambda v: v <= self.max_shift)
        kept = []
        for ti, track in enumerate(self.tracks):
            if ti not in used_tracks:
                track.misses += 1
                if track.misses > self.max_misses:
                    continue
                track.velocity = np.zeros(4, np.float32)  # unseen: hold it still rather than guess on
            kept.append(track)
        for fi, face in enumerate(faces):  # faces come biggest first: big new faces get tracks first
            if fi not in used_faces and len(kept) < self.max_tracks:
                kept.append(Track(self._next_id, face, frame, frame, face))
                self._next_id += 1
        self.tracks = kept
        return self.tracks

    def _match(self, track: Track, face: Face, frame: int) -> None:
        dt = frame - track.last_detection
        if dt > 0:
            measured = (face.box - track.detected_face.box) / dt
            w = self.velocity_weight if track.hits > 1 else 1.0
            track.velocity = (w * measured + (1 - w) * track.velocity).astype(np.float32)
        track.face = track.detected_face = face
        track.frame = track.last_detection = frame
        track.hits += 1
        track.misses = 0
