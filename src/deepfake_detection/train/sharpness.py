"""Sharpness strata: so that blur cannot stand for a label.

FaceForensics++ fakes differ from their reals in overall sharpness, by method: Deepfakes' faces are
decoded from a small autoencoder and are much blurrier than the reals, NeuralTextures' a little,
FaceSwap's are sharper (median Laplacian variance of the face centre, ffpp_crops: Deepfakes 20, real
40, FaceSwap 47). A detector trained on such data learns "blurry face = fake": it flags blurry real
faces and ranks a sharper unseen method below the reals. Balancing real and fake draws within
sharpness bins of each dataset (`data.balance_sharpness_bins`) removes that shortcut from the
training distribution without changing a pixel. Matching them (`data.match_sharpness_p`,
`SharpnessMatcher`) blurs crops instead, so that both classes take the same sharpness distribution.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from deepfake_detection.errors import DatasetError
from deepfake_detection.faces.quality import centre_sharpness

log = logging.getLogger(__name__)


def face_sharpness(path: str) -> float:
    """`centre_sharpness` of a stored crop."""
    grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise DatasetError(f"cannot read crop {path}")
    return centre_sharpness(grey)


def blur_to_sharpness(image: np.ndarray, target: float, *, max_sigma: float = 8.0,
                      steps: int = 8) -> np.ndarray:
    """`image` (RGB uint8) Gaussian-blurred until its `centre_sharpness` is about `target` (bisection on
    sigma, which sharpness falls with); unchanged when it is already at or below it."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if centre_sharpness(grey) <= target:
        return image

    def sharpness_at(sigma: float) -> float:
        return centre_sharpness(cv2.GaussianBlur(grey, (0, 0), sigma))

    lo, hi = 0.0, max_sigma
    if sharpness_at(hi) > target:  # as blurred as this blur goes
        lo = hi
    for _ in range(steps if lo < hi else 0):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sharpness_at(mid) > target else (lo, mid)
    return cv2.GaussianBlur(image, (0, 0), max(hi, 1e-3))


@dataclass(frozen=True)
class SharpnessMatcher:
    """Blurs training crops so that, within each dataset holding both classes, real and fake crops
    share one sharpness distribution: with probability `p` a row is blurred down to the sharpness of a
    random crop of the other class of its dataset, when that is lower. With p = 1 each class becomes
    min(own, other class), the same distribution for both. One-class datasets (photo pools, whose
    fakes are self-blends of the same crops) are left as they are."""

    sharpness: np.ndarray  # per row
    other_class: list[np.ndarray | None]  # per row: the other class's sharpness in its dataset, or None
    p: float

    @classmethod
    def build(cls, sharpness: np.ndarray, datasets: Sequence[str], labels: np.ndarray,
              p: float) -> SharpnessMatcher:
        names = np.asarray(datasets, dtype=object)
        other: list[np.ndarray | None] = [None] * len(names)
        for name in sorted(set(datasets)):
            rows = np.flatnonzero(names == name)
            by_class = [sharpness[rows[labels[rows] == c]] for c in (0, 1)]
            if min(map(len, by_class)) == 0:
                continue
            for i in rows:
                other[i] = by_class[1 - int(labels[i])]
        return cls(np.asarray(sharpness, np.float64), other, p)

    def __call__(self, i: int, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pool = self.other_class[i]
        if pool is None or rng.random() >= self.p:  # no draw at all for one-class datasets
            return image
        target = float(pool[rng.integers(len(pool))])
        return image if target >= self.sharpness[i] else blur_to_sharpness(image, target)


def sharpness_strata(sharpness: np.ndarray, datasets: Sequence[str], labels: np.ndarray,
                     bins: int) -> list[str]:
    """Each row's dataset name, suffixed with its sharpness bin ("ffpp#2") where the dataset holds both
    classes: `bins` quantile bins of the dataset's own rows, both classes pooled. Used as the unit of
    `balance_datasets`, every bin is then drawn half real, half fake. One-class datasets keep their name."""
    names = np.asarray(datasets, dtype=object)
    out = names.copy()
    for name in sorted(set(datasets)):
        rows = np.flatnonzero(names == name)
        if len(set(labels[rows].tolist())) < 2:
            continue
        sharp = sharpness[rows]
        edges = np.quantile(sharp, np.linspace(0, 1, bins + 1)[1:-1])
        which = np.searchsorted(edges, sharp, side="right")
        out[rows] = [f"{name}#{b}" for b in which]
        for b in range(bins):
            in_bin = labels[rows][which == b]
            log.info("sharpness bin %s#%d: %d real, %d fake (Laplacian variance up to %.1f)", name, b,
                     int((in_bin == 0).sum()), int((in_bin == 1).sum()),
                     edges[b] if b < len(edges) else sharp.max())
    return [str(s) for s in out]
