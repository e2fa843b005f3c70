"""Live overlay: per track a box, its id, label and smoothed fake probability (grey when the last
detection missed the face); FPS in the corner."""

from __future__ import annotations

import cv2
import numpy as np

from deepfake_detection.infer.render import draw_box, label_colour, line_style
from deepfake_detection.live.pipeline import FrameResult


def draw_live(frame: np.ndarray, result: FrameResult) -> np.ndarray:
    """Draw onto the BGR `frame` in place (it belongs to the pipeline; no copy at 60 fps) and return it."""
    for face in result.faces:  # a face the last detection missed: grey, its last score (it may have left)
        draw_box(frame, face.box, f"#{face.track_id} {face.label} {face.fake_probability:.2f}",
                 label_colour(None if face.lost else face.label, bgr=True))
    thickness, scale = line_style(frame)
    text = f"{result.fps:.0f} FPS  {len(result.faces)} face{'s' if len(result.faces) != 1 else ''}"
    cv2.putText(frame, text, (10, 10 + int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                thickness + 2, cv2.LINE_AA)
    cv2.putText(frame, text, (10, 10 + int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)
    return frame
