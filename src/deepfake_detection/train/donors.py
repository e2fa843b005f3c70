"""Donor faces for blending another person's face into a real crop (`data.identity_blend_ratio`).

Face X-ray picks, for each target, a donor among the real faces whose landmarks are nearest, so the
aligned donor fits the target's pose and the fake has no gross misfit to learn instead of the
boundary. Here: from `candidates` random real rows of the same dataset (same source, resolution and
compression, so the donor does not bring another format inside the mask) and of another `group` (another
person), the one whose 5 landmarks, centred and scaled to unit size, are nearest the target's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalised_landmarks(landmarks: Sequence[object]) -> np.ndarray:
    """(N, 10) float64: each row's 5 points centred and scaled to unit RMS size; NaN where a row has
    no usable 5 landmarks (None, wrong size, non-finite or all points equal)."""
    out = np.full((len(landmarks), 10), np.nan)
    for i, lm in enumerate(landmarks):
        if lm is None:
            continue
        pts = np.asarray(lm, np.float64)
        if pts.size != 10 or not np.isfinite(pts).all():
            continue
        pts = pts.reshape(5, 2) - pts.reshape(5, 2).mean(0)
        size = float(np.sqrt((pts**2).sum() / 5))
        if size > 1e-6:
            out[i] = (pts / size).reshape(-1)
    return out


class DonorPicker:
    """`pick(i, rng)` -> the index of a donor for row i, or None when its dataset has no other person."""

    def __init__(self, labels: np.ndarray, groups: Sequence[str], datasets: Sequence[str],
                 landmarks: Sequence[object], *, candidates: int = 16) -> None:
        self.groups = np.asarray(groups, dtype=object)
        self.datasets = np.asarray(datasets, dtype=object)
        self.shape = normalised_landmarks(landmarks)
        self.candidates = candidates
        usable = (np.asarray(labels) == 0) & np.isfinite(self.shape).all(1)
        self.pools = {d: np.flatnonzero(usable & (self.datasets == d)) for d in set(self.datasets)}

    def pick(self, i: int, rng: np.random.Generator) -> int | None:
        pool = self.pools.get(self.datasets[i], np.empty(0, np.int64))
        if not len(pool) or not np.isfinite(self.shape[i]).all():
            return None
        drawn = pool[rng.integers(len(pool), size=self.candidates)]
        drawn = drawn[self.groups[drawn] != self.groups[i]]
        if not len(drawn):
            return None
        distance = ((self.shape[drawn] - self.shape[i]) ** 2).sum(1)
        return int(drawn[int(np.argmin(distance))])
