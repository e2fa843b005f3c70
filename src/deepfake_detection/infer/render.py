"""Every picture of a result, in one place: boxes and labels on images (`dfd detect --annotate`), the
live overlay (`dfd live`), and the per-second timeline of a video (`dfd detect --plot`). Kept apart
from the result types: results are data, this is a view."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from deepfake_detection.infer.results import FaceResult, FrameResult, ImageResult, VideoResult, label_for

# Colours in the frame's own channel order are chosen by the caller's `bgr` flag.
_RED, _GREEN, _GREY = (220, 40, 40), (40, 180, 60), (160, 160, 160)


def label_colour(label: str | None, *, bgr: bool = False) -> tuple[int, int, int]:
    colour = _RED if label == "fake" else _GREEN if label == "real" else _GREY
    return (colour[2], colour[1], colour[0]) if bgr else colour


def line_style(frame: np.ndarray) -> tuple[int, float]:
    """(line thickness, font scale) that stay readable from thumbnails to 4K."""
    return max(2, round(max(frame.shape[:2]) / 400)), max(0.5, max(frame.shape[:2]) / 1400)


def _blurry(face: FaceResult) -> str:
    """A label suffix for a face too blurry for a trustworthy verdict."""
    return " blurry" if face.blurry else ""


def draw_box(out: np.ndarray, box: list[float], text: str, colour: tuple[int, int, int]) -> None:
    """One box with a filled label bar above it, drawn in place."""
    thickness, scale = line_style(out)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    top = max(y1 - th - base - 4, 0)
    cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + base + 4), colour, -1)
    cv2.putText(out, text, (x1 + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)


def draw_result(frame: np.ndarray, result: ImageResult, *, bgr: bool = False) -> np.ndarray:
    """Draw every face box with its label and probability onto a copy of `frame`."""
    out = frame.copy()
    for face in result.faces:
        label = label_for(face.fake_probability, result.threshold)
        draw_box(out, face.box, f"{label} {face.fake_probability:.2f}{_blurry(face)}",
                 label_colour(label, bgr=bgr))
    if result.status != "ok":
        cv2.putText(out, result.status, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, _GREY, 2, cv2.LINE_AA)
    return out


def draw_live(frame: np.ndarray, result: FrameResult) -> np.ndarray:
    """Draw onto the BGR `frame` in place (it belongs to the pipeline; no copy at 60 fps) and return it."""
    for face in result.faces:  # a face the last detection missed: grey, its last score (it may have left)
        draw_box(frame, face.box, f"#{face.track_id} {face.label} {face.fake_probability:.2f}{_blurry(face)}",
                 label_colour(None if face.lost else face.label, bgr=True))
    thickness, scale = line_style(frame)
    text = f"{result.fps:.0f} FPS  {len(result.faces)} face{'s' if len(result.faces) != 1 else ''}"
    cv2.putText(frame, text, (10, 10 + int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                thickness + 2, cv2.LINE_AA)
    cv2.putText(frame, text, (10, 10 + int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)
    return frame


def plot_timeline(result: VideoResult, path: str | os.PathLike[str]) -> Path:
    """PNG of the per-second scores (and each track's frame scores), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from deepfake_detection.io.atomic import atomic_path

    fig = Figure(figsize=(8, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for track in result.tracks:
        x = track.times or [float(i) for i in track.frame_indices]
        ax.plot(x, track.scores, ".-", alpha=0.45, lw=1, label=f"track {track.id} frames")
    if result.timeline:
        # One flat segment per second [s, s + 1): the value is an aggregate over that whole second.
        edges = [row["second"] for row in result.timeline] + [result.timeline[-1]["second"] + 1]
        values = [row["fake_probability"] for row in result.timeline]
        ax.step(edges, [*values, values[-1]], where="post", color="black", lw=2,
                label="per second (max over faces)")
    ax.axhline(result.threshold, color="red", ls="--", lw=1, label="threshold")
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)" if result.fps else "frame")
    ax.set_ylabel("fake probability")
    verdict = "-" if result.fake_probability is None else f"{result.fake_probability:.3f} ({result.label})"
    ax.set_title(f"{Path(result.path or 'video').name}: video {verdict}", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, suffix=".png") as tmp:
        fig.tight_layout()
        fig.savefig(tmp, format="png")
    return target
