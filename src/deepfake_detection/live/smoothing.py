"""Per-track temporal smoothing: a moving average of the fake probability and a label with
hysteresis, so a face near the threshold does not flicker between "real" and "fake"."""

from __future__ import annotations

from collections import deque

from deepfake_detection.infer.results import Label


class Smoother:
    """Moving average over the last `window` scores; the label flips to fake only when the average
    reaches `threshold + margin` and back to real only below `threshold - margin`."""

    def __init__(self, threshold: float, *, window: int = 5, margin: float = 0.05) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.threshold = threshold
        self.margin = margin
        self._scores: deque[float] = deque(maxlen=window)
        self.label: Label | None = None

    @property
    def probability(self) -> float | None:
        return sum(self._scores) / len(self._scores) if self._scores else None

    def update(self, score: float) -> float:
        """Add one raw score; returns the smoothed probability (and updates `label`)."""
        self._scores.append(float(score))
        p = sum(self._scores) / len(self._scores)
        if self.label is None:  # first score: plain threshold, as for a single image
            self.label = "fake" if p >= self.threshold else "real"
        elif self.label == "real" and p >= min(self.threshold + self.margin, 1.0):
            self.label = "fake"
        elif self.label == "fake" and p < max(self.threshold - self.margin, 0.0):
            self.label = "real"
        return p
