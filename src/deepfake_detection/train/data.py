"""Manifest rows -> training samples, and the per-epoch sample orders (plain, class-balanced, paired).

Determinism: every random choice for a sample (whether a real crop becomes a self-blended fake, the
blend itself, the augmentation) comes from a generator seeded by (seed, epoch, index). Samplers yield
`(epoch, index)` keys, so a sample is the same whichever process, worker or rank draws it, and a
resumed run reproduces the stream without saving any loader state.

Sharding: the epoch's global order is cut into micro-batches of `batch_size`; global micro-step j is
order[j*B*W : (j+1)*B*W] and rank r takes its r-th slice of B. So 2 ranks x batch 4 see exactly the
samples 1 rank x batch 8 sees, step by step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from deepfake_detection.data.blend import (
    CUTOUT_PARTS,
    BlendConfig,
    cut_out_face_part,
    identity_blend,
    self_blend,
)
from deepfake_detection.data.manifest import read_manifest
from deepfake_detection.data.types import CROP_PROTOCOL_COLUMNS
from deepfake_detection.errors import DatasetError
from deepfake_detection.evaluate.robustness import h264, jpeg
from deepfake_detection.infer.preprocess import to_batch
from deepfake_detection.models.spec import CropProtocol, ModelSpec
from deepfake_detection.train.donors import DonorPicker
from deepfake_detection.train.sharpness import SharpnessMatcher

log = logging.getLogger(__name__)

Key = tuple[int, int]  # (epoch, row index)
Transform = Callable[..., dict[str, Any]]  # an albumentations Compose


def load_manifests(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate manifests; `crop_path` becomes absolute (it is relative to its manifest's folder).
    Refuses manifests whose crops were made with different crop protocols (`crop_protocol_of`)."""
    from deepfake_detection.data.prepare import source_padding

    frames = []
    for p in paths:
        df = read_manifest(p)
        root = Path(p).resolve().parent
        df["crop_path"] = [str(root / c) for c in df["crop_path"]]
        df["source_pad"] = source_padding(p)  # how its sources are read again through the product path
        frames.append(df)
    rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    crop_protocol_of(rows, where=", ".join(map(str, paths)))
    return rows


def crop_protocol_of(rows: pd.DataFrame, *, where: str) -> tuple[CropProtocol, int]:
    """The one crop protocol and crop size of `rows`; DatasetError when rows disagree (mixed crops).

    A detector recorded as "unknown" (manifests written before it was recorded) is compatible with any
    detector; the protocol then names the default detector."""
    columns = list(CROP_PROTOCOL_COLUMNS)
    combos = rows[columns].drop_duplicates()
    known = combos[combos["crop_detector"] != "unknown"]
    mixed = len(combos.drop(columns="crop_detector").drop_duplicates()) > 1
    if mixed or known["crop_detector"].nunique() > 1:
        shown = "; ".join(", ".join(f"{c}={v}" for c, v in zip(columns, r, strict=True))
                          for r in combos.itertuples(index=False))
        raise DatasetError(f"{where}: crops made with different crop protocols ({shown}); prepare them "
                           "again with one --crop-scale / --align / --detector, or train on one of them")
    first = combos.iloc[0]
    detector = str(known["crop_detector"].iloc[0]) if len(known) else CropProtocol().detector
    protocol = CropProtocol(version=int(first["crop_protocol"]), scale=float(first["crop_scale"]),
                            align=bool(first["crop_align"]), detector=detector)
    return protocol, int(first["crop_size"])


def sample_seed(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index]))


class CropDataset(Dataset[dict[str, Any]]):
    """Crops of a manifest frame. `dataset[(epoch, i)]` -> {image: float32 (3,S,S), label, index}.

    A real row i is turned into a self-blended fake (label 1) with probability `sbi_p[i]` (one number:
    every real row), decided per (seed, epoch, index); when blending refuses the landmarks the untouched
    real is kept (label 0). A share `identity_p` of those blends takes its face from another person's
    real crop of the same dataset (`identity_blend`, donor chosen by `DonorPicker`) instead of the crop
    itself; with no such donor the blend is a self-blend.
    Both classes then go through the same `transform` and the spec's normalisation (as inference).
    `jpeg_pair` (a quality range): the sample also holds "image_jpeg", the transformed crop re-encoded as
    JPEG at a quality drawn from it (the second view of training's JPEG consistency); with
    `pair_codec="h264"` the range is of H.264 CRFs and the view one H.264 frame instead.
    `match_sharpness`: first of all, the crop may be blurred to another class's sharpness.
    `part_cutout_p`: after any blend, the chance that one face part of `part_cutout_parts` is painted
    black (either class)."""

    def __init__(self, rows: pd.DataFrame, spec: ModelSpec, transform: Transform, *,
                 sbi_p: float | np.ndarray = 0.0, seed: int = 0, blend: BlendConfig | None = None,
                 jpeg_pair: tuple[int, int] | None = None, identity_p: float = 0.0,
                 match_sharpness: SharpnessMatcher | None = None,
                 pair_codec: Literal["jpeg", "h264"] = "jpeg", part_cutout_p: float = 0.0,
                 part_cutout_parts: Sequence[str] = CUTOUT_PARTS) -> None:
        self.paths = [str(p) for p in rows["crop_path"]]
        self.labels = rows["label"].to_numpy(np.int64)
        self.groups = [str(g) for g in rows["group"]]
        self.landmarks = list(rows["landmarks"])
        lm68 = rows["landmarks68"] if "landmarks68" in rows else [None] * len(rows)
        self.landmarks68 = list(lm68)
        self.spec, self.transform, self.seed, self.blend = spec, transform, seed, blend
        self.jpeg_pair, self.pair_codec, self.match_sharpness = jpeg_pair, pair_codec, match_sharpness
        # Per row; fakes are never blended. Validation gives a fixed half of its reals 1.0, the rest 0.
        per_row = np.broadcast_to(np.asarray(sbi_p, np.float64), len(rows))
        self.sbi_p = np.where(self.labels == 0, per_row, 0.0)
        self.sbi_failures = 0  # per process; for the log, not for correctness
        self.identity_p, self.part_cutout_p = identity_p, part_cutout_p
        self.part_cutout_parts = tuple(part_cutout_parts)
        self.donors = None
        if identity_p > 0:
            datasets = rows["dataset"] if "dataset" in rows else [""] * len(rows)
            self.donors = DonorPicker(self.labels, self.groups, [str(d) for d in datasets], self.landmarks)

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int) -> np.ndarray:
        bgr = cv2.imread(self.paths[i], cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"cannot read crop {self.paths[i]}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _blend(self, i: int, image: np.ndarray, lm: Any, rng: np.random.Generator) -> np.ndarray:
        # identity_p == 0 draws nothing here, so runs without it keep their exact sample stream.
        donor = None
        if self.donors is not None and rng.random() < self.identity_p:
            donor = self.donors.pick(i, rng)
        if donor is None:
            return self_blend(image, lm, rng, landmarks68=self.landmarks68[i], cfg=self.blend)[0]
        return identity_blend(image, lm, self._read(donor), self.landmarks[donor], rng,
                              landmarks68=self.landmarks68[i], cfg=self.blend)[0]

    def _cut_out(self, i: int, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lm = self.landmarks[i]
        if lm is None:
            return image
        try:
            return cut_out_face_part(image, lm, rng, self.part_cutout_parts)
        except ValueError as exc:  # degenerate landmarks: the crop stays whole
            log.debug("part cutout skipped for %s: %s", self.paths[i], exc)
            return image

    def __getitem__(self, key: Key | int) -> dict[str, Any]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        rng = sample_seed(self.seed, epoch, i)
        tf_seed = int(rng.integers(2**31))  # drawn first: independent of how much the blend consumes
        image = self._read(i)
        if self.match_sharpness is not None:  # off: no draw, so other runs keep their sample stream
            image = self.match_sharpness(i, image, rng)
        label = int(self.labels[i])
        p = float(self.sbi_p[i])
        if p > 0 and rng.random() < p:
            lm = self.landmarks[i]
            try:
                if lm is None:
                    raise ValueError("no landmarks")
                image = self._blend(i, image, lm, rng)
                label = 1
            except ValueError as exc:  # degenerate landmarks: keep the real crop, as a real
                self.sbi_failures += 1
                log.debug("SBI skipped for %s: %s", self.paths[i], exc)
        if self.part_cutout_p and rng.random() < self.part_cutout_p:  # off: no draw, as above
            image = self._cut_out(i, image, rng)
        set_seed = getattr(self.transform, "set_random_seed", None)
        if set_seed is not None:
            set_seed(tf_seed)
        image = np.ascontiguousarray(self.transform(image=image)["image"])
        x = to_batch([image], self.spec)[0]  # the inference normalisation
        sample = {"image": torch.from_numpy(x), "label": torch.tensor(label, dtype=torch.float32), "index": i}
        if self.jpeg_pair is not None:
            quality = int(rng.integers(self.jpeg_pair[0], self.jpeg_pair[1] + 1))
            coded = h264(image, quality) if self.pair_codec == "h264" else jpeg(image, quality)
            sample["image_jpeg"] = torch.from_numpy(to_batch([coded], self.spec)[0])
        return sample


# ---- epoch orders ---------------------------------------------------------------------------------

def _rng(seed: int, epoch: int, salt: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, salt]))


def _cycle(indices: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n items from `indices`: whole fresh permutations, then part of one (every item used evenly)."""
    reps = -(-n // max(len(indices), 1))
    return np.concatenate([rng.permutation(indices) for _ in range(reps)])[:n]


def plain_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return _rng(seed, epoch, 1).permutation(n)


def balanced_order(labels: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """len(labels) indices, exactly half from each class (the minority repeated), shuffled."""
    rng = _rng(seed, epoch, 2)
    reals, fakes = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    if not len(reals) or not len(fakes):  # one class (e.g. real-only SBI training): nothing to balance
        return rng.permutation(len(labels))
    n = len(labels)
    order = np.concatenate([_cycle(reals, n - n // 2, rng), _cycle(fakes, n // 2, rng)])
    return rng.permutation(order)


def pair_in_batches(order: np.ndarray, labels: np.ndarray, groups: Sequence[str], micro_batch: int,
                    rng: np.random.Generator) -> np.ndarray:
    """`order`'s draws (repeats kept, so any balance it holds is kept) arranged in micro-batches of
    `micro_batch` where each (real, fake) draw pair of the same group sits in the same micro-batch
    (GenD: the batch's gradient then contrasts the manipulation, not the scene). Pairs and unpaired
    draws are shuffled together as units and packed in that order, so every batch mixes them in about
    the epoch's proportion: packing pairs first gathered the unpaired sources (GAN faces, photos) in
    batches of their own, which BatchNorm then learns as a source (forty-second session)."""
    by_group: dict[str, tuple[list[int], list[int]]] = {}
    for i in order:
        by_group.setdefault(groups[i], ([], []))[int(labels[i])].append(int(i))
    units: list[tuple[int, ...]] = []
    for g in sorted(by_group):
        reals, fakes = (list(rng.permutation(v)) for v in by_group[g])
        k = min(len(reals), len(fakes))
        units += list(zip(reals[:k], fakes[:k], strict=True))
        units += [(i,) for i in reals[k:] + fakes[k:]]
    units = [units[j] for j in rng.permutation(len(units))]
    flat: list[int] = []
    waiting: list[tuple[int, ...]] = []  # pairs that met a batch's last slot: placed in the next batch
    last_single = -1  # where in `flat` the latest unpaired draw went
    for unit in units:
        while waiting and micro_batch - len(flat) % micro_batch >= 2:
            flat += waiting.pop(0)
        if len(unit) == 2 and micro_batch - len(flat) % micro_batch == 1:
            waiting.append(unit)
        else:
            last_single = len(flat) if len(unit) == 1 else last_single
            flat += unit
    if waiting and last_single >= len(flat) - len(flat) % micro_batch:  # only pairs are left: the open
        waiting.append((flat.pop(last_single),))  # batch's single goes last, so (even sizes) none splits
    for unit in waiting:
        flat += unit
    return np.array(flat, dtype=np.int64)


DatasetDraws = tuple[np.ndarray, np.ndarray, int, int]  # reals, fakes, real draws, fake draws


def _dataset_classes(labels: np.ndarray, datasets: Sequence[str],
                     mixed_sbi: float = 0.0) -> list[DatasetDraws]:
    """Per dataset (sorted): its real rows, its fake rows and how many draws of each an epoch makes.
    A dataset with both classes: reals drawn the majority's count n, fakes n x (1 - 2 mixed_sbi), so
    that with a share `mixed_sbi` of its real draws self-blended it stays half real, half fake. A
    one-class dataset: (0, 0), drawn once as it is."""
    names = np.asarray(datasets)
    out = []
    for name in sorted(set(datasets)):
        rows = np.flatnonzero(names == name)
        reals, fakes = rows[labels[rows] == 0], rows[labels[rows] == 1]
        n = max(len(reals), len(fakes)) if len(reals) and len(fakes) else 0
        out.append((reals, fakes, n, round(n * (1 - 2 * mixed_sbi))))
    return out


def dataset_balanced_order(labels: np.ndarray, datasets: Sequence[str], seed: int, epoch: int,
                           mixed_sbi: float = 0.0) -> np.ndarray:
    """Per dataset holding both classes, as many reals as fakes (the minority repeated, fresh
    permutations; see `_dataset_classes` for `mixed_sbi`); real-only or fake-only datasets once each;
    all shuffled together."""
    rng = _rng(seed, epoch, 4)
    parts = []
    for reals, fakes, n_real, n_fake in _dataset_classes(labels, datasets, mixed_sbi):
        parts += [_cycle(reals, n_real, rng), _cycle(fakes, n_fake, rng)] if n_real else [reals, fakes]
    return rng.permutation(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


@dataclass(frozen=True)
class OrderSpec:
    """How an epoch's global order is drawn."""

    labels: np.ndarray
    groups: Sequence[str]
    seed: int
    class_balance: bool = False
    pair_sources: bool = False  # composes with either balance: same-group real and fake draws share a batch
    datasets: Sequence[str] | None = None  # given: every dataset half real, half fake (balance_datasets)
    mixed_sbi: float = 0.0  # with datasets: share of the real draws of datasets with fakes that are blended

    def length(self) -> int:
        """Rows per epoch: every row once, except with dataset balance (minority classes repeated)."""
        if self.datasets is None:
            return len(self.labels)
        parts = _dataset_classes(self.labels, self.datasets, self.mixed_sbi)
        return sum(n_real + n_fake if n_real else len(r) + len(f) for r, f, n_real, n_fake in parts)

    def order(self, epoch: int, micro_batch: int) -> np.ndarray:
        if self.datasets is not None:
            order = dataset_balanced_order(self.labels, self.datasets, self.seed, epoch, self.mixed_sbi)
        elif self.class_balance:
            order = balanced_order(self.labels, self.seed, epoch)
        else:
            order = plain_order(len(self.labels), self.seed, epoch)
        if self.pair_sources:  # the same draws, re-arranged: any balance is kept
            return pair_in_batches(order, self.labels, self.groups, micro_batch, _rng(self.seed, epoch, 3))
        return order


class ShardedBatchSampler(Sampler[list[Key]]):
    """This rank's micro-batches of the epoch's global order, as lists of (epoch, index) keys.

    The order is padded by wrapping around to a whole number of optimiser steps
    (batch_size x world_size x grad_accum), so every step is full and every rank runs the same number
    of steps (DDP needs that)."""

    def __init__(self, spec: OrderSpec, batch_size: int, *, world_size: int = 1, rank: int = 0,
                 grad_accum: int = 1) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.spec, self.batch_size, self.world_size, self.rank = spec, batch_size, world_size, rank
        self.step_size = batch_size * world_size * grad_accum
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_order(self) -> np.ndarray:
        order = self.spec.order(self.epoch, self.batch_size)
        n = -(-len(order) // self.step_size) * self.step_size
        return np.resize(order, n)  # np.resize wraps around

    def __len__(self) -> int:
        n = self.spec.length()  # every order holds each row once, or n draws (balanced)
        return -(-n // self.step_size) * self.step_size // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[Key]]:
        order = self.global_order()
        span = self.batch_size * self.world_size
        for start in range(0, len(order), span):
            lo = start + self.rank * self.batch_size
            yield [(self.epoch, int(i)) for i in order[lo : lo + self.batch_size]]


class ShardedEvalSampler(Sampler[list[Key]]):
    """Evaluation: rank r takes rows r, r+W, ...; results are gathered and re-ordered by index."""

    def __init__(self, n: int, batch_size: int, *, world_size: int = 1, rank: int = 0) -> None:
        super().__init__()
        self.indices = list(range(rank, n, world_size))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[list[Key]]:
        for s in range(0, len(self.indices), self.batch_size):
            yield [(0, i) for i in self.indices[s : s + self.batch_size]]
