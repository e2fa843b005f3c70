"""Drawing results on frames. Kept apart from the result types: results are data, this is a view."""

from __future__ import annotations

import cv2
import numpy as np

from deepfake_detection.infer.results import ImageResult, label_for

# Colours in the frame's own channel order are chosen by the caller's `bgr` flag.
_RED, _GREEN, _GREY = (220, 40, 40), (40, 180, 60), (160, 160, 160)


def label_colour(label: str | None, *, bgr: bool = False) -> tuple[int, int, int]:
    colour = _RED if label == "fake" else _GREEN if label == "real" else _GREY
    return (colour[2], colour[1], colour[0]) if bgr else colour


def line_style(frame: np.ndarray) -> tuple[int, float]:
    """(line thickness, font scale) that stay readable from thumbnails to 4K."""
    return max(2, round(max(frame.shape[:2]) / 400)), max(0.5, max(frame.shape[:2]) / 1400)


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
        draw_box(out, face.box, f"{label} {face.fake_probability:.2f}", label_colour(label, bgr=bgr))
    if result.status != "ok":
        cv2.putText(out, result.status, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, _GREY, 2, cv2.LINE_AA)
    return out
