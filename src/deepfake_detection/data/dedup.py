"""Perceptual hashes of face crops, and near-duplicates across splits.

A near-copy of a test image in train (the same clip re-uploaded, a re-encoded frame) makes test
numbers optimistic, so duplicates across splits are found with a 64-bit DCT pHash and dropped
from train only: evaluation data stays exactly what it was.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import pandas as pd

__all__ = ["find_cross_split_duplicates", "hamming", "perceptual_hash", "remove_cross_split_duplicates"]

_SPLIT_RANK = {"train": 0, "val": 1, "test": 2}  # pairs are reported as (lower rank, higher rank)
_MAX_PAIRS_PER_CHUNK = 4_000_000  # bounds memory when many hashes share a band value
PAIR_COLUMNS = ("crop_path_a", "crop_path_b", "split_a", "split_b", "distance")
REPORT_COLUMNS = ("crop_path", "split", "duplicate_of", "duplicate_split", "distance")


def perceptual_hash(image_rgb: np.ndarray) -> int:
    """64-bit DCT pHash of an RGB (or grayscale) uint8 image, as a signed int64-compatible int.

    Grayscale, 32x32 INTER_AREA, DCT, the top-left 8x8 block compared with the median of its 63 AC
    coefficients (the DC term, the mean brightness, would skew the median); row-major bits, MSB first.
    """
    img = image_rgb
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2GRAY if img.shape[2] == 4 else cv2.COLOR_RGB2GRAY)
    small = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    block = cv2.dct(small)[:8, :8].ravel()
    bits = block > np.median(block[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big", signed=True)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes (signed or unsigned ints)."""
    return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()


def _bands(max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of max_distance+1 disjoint bands covering 64 bits: by pigeonhole, two hashes
    within max_distance bits agree exactly on at least one band."""
    n = max_distance + 1
    widths = [64 // n + (1 if i < 64 % n else 0) for i in range(n)]
    out, shift = [], 0
    for w in widths:
        out.append((shift, w))
        shift += w
    return out


def _band_candidates(
    ua: np.ndarray, ub: np.ndarray, shift: int, width: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs (i into ua, j into ub) whose band values are equal, in bounded chunks."""
    mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    va = (ua >> np.uint64(shift)) & mask
    vb = (ub >> np.uint64(shift)) & mask
    order = np.argsort(vb, kind="stable")
    vbs = vb[order]
    lo = np.searchsorted(vbs, va, "left")
    counts = np.searchsorted(vbs, va, "right") - lo
    hit = np.flatnonzero(counts)
    if hit.size == 0:
        return
    cum = np.cumsum(counts[hit])
    start = 0
    while start < hit.size:
        base = cum[start - 1] if start else 0
        stop = max(int(np.searchsorted(cum, base + _MAX_PAIRS_PER_CHUNK, "right")), start + 1)
        idx, c = hit[start:stop], counts[hit[start:stop]]
        ia = np.repeat(idx, c)
        offsets = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        yield ia, order[np.repeat(lo[idx], c) + offsets]
        start = stop


def _near_pairs(
    ua: np.ndarray, ub: np.ndarray, max_distance: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (i, j, distance) with popcount(ua[i] ^ ub[j]) <= max_distance, each pair once."""
    keys, dists = [], []
    for shift, width in _bands(max_distance):
        for ia, ib in _band_candidates(ua, ub, shift, width):
            d = np.bitwise_count(ua[ia] ^ ub[ib])
            ok = d <= max_distance
            keys.append(ia[ok].astype(np.int64) * len(ub) + ib[ok])
            dists.append(d[ok])
    if not keys:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    key, first = np.unique(np.concatenate(keys), return_index=True)
    return key // len(ub), key % len(ub), np.concatenate(dists)[first].astype(np.int64)


def _expand(
    inv_a: np.ndarray, inv_b: np.ndarray, pa: np.ndarray, pb: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Turn pairs of unique hashes into pairs of rows (every row holding hash a x every row holding b)."""
    oa, ob = np.argsort(inv_a, kind="stable"), np.argsort(inv_b, kind="stable")
    ca, cb = np.bincount(inv_a), np.bincount(inv_b)
    sa, sb = np.cumsum(ca) - ca, np.cumsum(cb) - cb
    n = ca[pa] * cb[pb]
    k = np.repeat(np.arange(len(pa)), n)
    j = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    return oa[sa[pa[k]] + j // cb[pb[k]]], ob[sb[pb[k]] + j % cb[pb[k]]]


def _ordered_splits(splits: Sequence[str]) -> list[str]:
    return sorted(splits, key=lambda s: (_SPLIT_RANK.get(s, len(_SPLIT_RANK)), s))


def find_cross_split_duplicates(df: pd.DataFrame, max_distance: int = 4) -> pd.DataFrame:
    """Pairs of rows in different splits whose pHashes differ in at most `max_distance` bits.

    Every row pair is listed, so a large group of identical frames gives a quadratic table: for
    removal use `remove_cross_split_duplicates`, which matches unique hashes only.

    Columns: crop_path_a, crop_path_b, split_a, split_b, distance; split_a ranks before split_b
    (train < val < test < others). Rows sharing a hash are bucketed first (frames of a still shot
    often do), then candidates come from max_distance+1 equal bit bands (vectorised, no all-pairs scan).
    """
    if not 0 <= max_distance < 64:
        raise ValueError(f"max_distance must be in 0..63, got {max_distance}")
    hashes = df["phash"].to_numpy(dtype=np.int64).view(np.uint64)
    split = df["split"].astype(str).to_numpy()
    paths = df["crop_path"].astype(str).to_numpy()
    names = _ordered_splits(list(pd.unique(split)))
    parts = []
    for i, sa in enumerate(names):
        rows_a = np.flatnonzero(split == sa)
        ua, inv_a = np.unique(hashes[rows_a], return_inverse=True)
        for sb in names[i + 1:]:
            rows_b = np.flatnonzero(split == sb)
            ub, inv_b = np.unique(hashes[rows_b], return_inverse=True)
            pa, pb, dist = _near_pairs(ua, ub, max_distance)
            if pa.size == 0:
                continue
            ra, rb = _expand(inv_a, inv_b, pa, pb)
            d = dist[np.repeat(np.arange(len(pa)), np.bincount(inv_a)[pa] * np.bincount(inv_b)[pb])]
            parts.append(pd.DataFrame({
                "crop_path_a": paths[rows_a[ra]], "crop_path_b": paths[rows_b[rb]],
                "split_a": sa, "split_b": sb, "distance": d.astype(np.int64),
            }))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c == "distance" else str) for c in PAIR_COLUMNS})
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["distance", "crop_path_a", "crop_path_b"], kind="stable", ignore_index=True)


def remove_cross_split_duplicates(
    df: pd.DataFrame, max_distance: int = 4, *, drop_from: Sequence[str] = ("train",)
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop rows of `drop_from` splits (train) that near-duplicate a row of another split.

    Val and test are never touched, so evaluation data is unchanged; a val-test pair is left alone
    (it does not leak into training). Returns (kept_df, removed_report), the report holding one row
    per removed crop: crop_path, split, duplicate_of, duplicate_split, distance (closest match).

    Matching runs on unique hashes, never on row pairs: 20,000 frames of a still shot share one
    hash, and their row pairs (400 million) would not fit in memory.
    """
    if not 0 <= max_distance < 64:
        raise ValueError(f"max_distance must be in 0..63, got {max_distance}")
    hashes = df["phash"].to_numpy(dtype=np.int64).view(np.uint64)
    split = df["split"].astype(str).to_numpy()
    paths = df["crop_path"].astype(str).to_numpy()
    droppable = np.isin(split, list(drop_from))
    rows_d, rows_k = np.flatnonzero(droppable), np.flatnonzero(~droppable)
    empty = pd.DataFrame({c: pd.Series(dtype=np.int64 if c == "distance" else str) for c in REPORT_COLUMNS})
    if rows_d.size == 0 or rows_k.size == 0:
        return df.copy(), empty
    ud, inv_d = np.unique(hashes[rows_d], return_inverse=True)
    uk, first_k = np.unique(hashes[rows_k], return_index=True)  # one representative row per kept hash
    pa, pb, dist = _near_pairs(ud, uk, max_distance)
    if pa.size == 0:
        return df.copy(), empty
    order = np.lexsort((first_k[pb], dist, pa))  # per droppable hash: the closest match first
    pa, pb, dist = pa[order], pb[order], dist[order]
    best = np.flatnonzero(np.r_[True, pa[1:] != pa[:-1]])
    match = np.full(len(ud), -1)
    match[pa[best]] = pb[best]
    match_dist = np.zeros(len(ud), np.int64)
    match_dist[pa[best]] = dist[best]
    removed = rows_d[match[inv_d] >= 0]
    partner = rows_k[first_k[match[inv_d[match[inv_d] >= 0]]]]
    report = pd.DataFrame({
        "crop_path": paths[removed], "split": split[removed], "duplicate_of": paths[partner],
        "duplicate_split": split[partner], "distance": match_dist[inv_d[match[inv_d] >= 0]],
    }).sort_values("crop_path", kind="stable", ignore_index=True)
    keep = np.ones(len(df), bool)
    keep[removed] = False
    return df[keep].copy(), report
