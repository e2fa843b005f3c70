"""The face record every detector backend returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixel coordinates of the image it was found in.

    box: float32 array [x1, y1, x2, y2].
    landmarks: float32 array (5, 2) — left eye, right eye, nose, left mouth corner, right mouth
        corner (image left/right as seen) — or None when the backend has no landmarks.
    score: detector confidence in 0..1.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    def scaled(self, factor: float) -> Face:
        """The same face with coordinates multiplied by `factor` (downscaled -> original)."""
        lm = None if self.landmarks is None else (self.landmarks * factor).astype(np.float32)
        return Face((self.box * factor).astype(np.float32), self.score, lm)
