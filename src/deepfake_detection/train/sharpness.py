"""Sharpness strata: so that blur cannot stand for a label.

FaceForensics++ fakes differ from their reals in overall sharpness, by method: Deepfakes' faces are
decoded from a small autoencoder and are much blurrier than the reals, NeuralTextures' a little,
FaceSwap's are sharper (median Laplacian variance of the face centre, ffpp_crops: Deepfakes 20, real
40, FaceSwap 47). A detector trained on such data learns "blurry face = fake": it flags blurry real
faces and ranks a sharper unseen method below the reals. Balancing real and fake draws within
sharpness bins of each dataset (`data.balance_sharpness_bins`) removes that shortcut from the
training distribution without changing a pixel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from deepfake_detection.errors import DatasetError

log = logging.getLogger(__name__)


def face_sharpness(path: str) -> float:
    """Variance of the Laplacian over the central half of a stored crop (grey levels): the face, not
    the background or the padding around it."""
    grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise DatasetError(f"cannot read crop {path}")
    h, w = grey.shape
    centre = grey[h // 4: h - h // 4, w // 4: w - w // 4]
    return float(cv2.Laplacian(centre, cv2.CV_64F).var())


def sharpness_strata(paths: Sequence[str], datasets: Sequence[str], labels: np.ndarray,
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
        sharp = np.array([face_sharpness(paths[int(i)]) for i in rows])
        edges = np.quantile(sharp, np.linspace(0, 1, bins + 1)[1:-1])
        which = np.searchsorted(edges, sharp, side="right")
        out[rows] = [f"{name}#{b}" for b in which]
        for b in range(bins):
            in_bin = labels[rows][which == b]
            log.info("sharpness bin %s#%d: %d real, %d fake (Laplacian variance up to %.1f)", name, b,
                     int((in_bin == 0).sum()), int((in_bin == 1).sum()),
                     edges[b] if b < len(edges) else sharp.max())
    return [str(s) for s in out]
