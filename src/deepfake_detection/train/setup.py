"""Building a run's pieces from its config: the two datasets and loaders, the model."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from deepfake_detection.data.augment import build_eval_transform, build_train_transform
from deepfake_detection.errors import DatasetError
from deepfake_detection.models.registry import create_model
from deepfake_detection.models.spec import CropProtocol, ModelSpec
from deepfake_detection.train.config import ConfigError, TrainConfig
from deepfake_detection.train.data import (
    CropDataset,
    OrderSpec,
    ShardedBatchSampler,
    ShardedEvalSampler,
    crop_protocol_of,
    load_manifests,
)
from deepfake_detection.train.distributed import DistInfo
from deepfake_detection.train.sharpness import SharpnessMatcher, face_sharpness, sharpness_strata

log = logging.getLogger(__name__)


@dataclass
class RunData:
    train_set: CropDataset
    val_set: CropDataset
    train_sampler: ShardedBatchSampler
    train_loader: DataLoader[dict[str, object]]
    val_loader: DataLoader[dict[str, object]]
    protocol: CropProtocol  # how the manifests' crops were made: the model's spec carries it
    val_rows: pd.DataFrame  # the validation manifest rows (their source files calibrate the model)


def _capped(df: pd.DataFrame, cap: int | None, seed: int, *, balanced: bool = False) -> pd.DataFrame:
    """A fixed (seeded, epoch-independent) subset of at most `cap` rows, in manifest order.
    balanced: alternate classes, so a capped validation set keeps both."""
    if cap is None or len(df) <= cap:
        return df
    rng = np.random.default_rng(np.random.SeedSequence([seed, 99]))
    if balanced:
        per = [rng.permutation(np.flatnonzero(df["label"].to_numpy() == c)) for c in (0, 1)]
        inter = [p[k] for k in range(max(map(len, per))) for p in per if k < len(p)]
        pick = np.sort(np.asarray(inter[:cap]))
    else:
        pick = np.sort(rng.permutation(len(df))[:cap])
    return df.iloc[pick].reset_index(drop=True)


def real_only_datasets(rows: pd.DataFrame) -> np.ndarray:
    """True for the rows of datasets that hold no fake: the only ones self-blended with balance_datasets."""
    with_fakes = set(rows.loc[rows["label"] == 1, "dataset"])
    return ~rows["dataset"].isin(with_fakes).to_numpy()


def sbi_probabilities(rows: pd.DataFrame, cfg: TrainConfig) -> np.ndarray:
    """Per training row, the chance that a draw of it is self-blended (fakes: 0). With balance_datasets,
    real-only pools get sbi_ratio and datasets with fakes of their own mixed_sbi_ratio (in-domain
    pseudo-fakes; the order draws that many fewer of their own fakes)."""
    if not cfg.data.sbi:
        return np.zeros(len(rows))
    p = np.full(len(rows), cfg.data.sbi_ratio)
    if cfg.data.balance_datasets:
        p = np.where(real_only_datasets(rows), cfg.data.sbi_ratio, cfg.data.mixed_sbi_ratio)
    return np.where(rows["label"].to_numpy() == 0, p, 0.0)


def split_rows(cfg: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = load_manifests(cfg.data.manifests)  # refuses mixed crop protocols
    train = rows[rows["split"] == "train"]
    if not cfg.data.use_fakes:
        train = train[train["label"] == 0]
    val = rows[rows["split"] == "val"].reset_index(drop=True)
    train = _capped(train.reset_index(drop=True), cfg.data.max_train_samples, cfg.seed)
    val = _capped(val, cfg.data.max_val_samples, cfg.seed, balanced=True)
    where = ", ".join(cfg.data.manifests)
    if train.empty:
        kind = "" if cfg.data.use_fakes else " real"
        raise DatasetError(f"{where}: no{kind} training rows (split 'train')")
    if not cfg.data.sbi and train["label"].nunique() < 2:
        raise ConfigError("training data hold one class only: enable data.sbi or data.use_fakes")
    if val.empty:
        raise DatasetError(f"{where}: no validation rows (split 'val'); checkpoints are chosen on them")
    labels = set(val["label"])
    if labels != {0, 1} and not (labels == {0} and cfg.data.sbi and len(val) >= 2):
        raise DatasetError(f"{where}: the validation split needs real and fake crops (or reals, with sbi)")
    return train, val


def build_data(cfg: TrainConfig, spec: ModelSpec, info: DistInfo) -> RunData:
    train_rows, val_rows = split_rows(cfg)
    protocol, _ = crop_protocol_of(pd.concat([train_rows, val_rows]), where=", ".join(cfg.data.manifests))
    size = spec.input_size
    aug = cfg.data.augment
    val_tf = build_eval_transform(size, aug.resize_filter if aug is not None else "area")
    train_tf = build_train_transform(aug, size) if aug is not None else val_tf
    if cfg.data.mixed_sbi_ratio and not (cfg.data.balance_datasets and cfg.data.sbi):
        raise ConfigError("data.mixed_sbi_ratio needs data.balance_datasets and data.sbi")
    consistency = cfg.consistency
    pair = (consistency.jpeg_quality if consistency.codec == "jpeg" else consistency.h264_crf) \
        if consistency.weight > 0 else None
    if cfg.data.balance_sharpness_bins and not cfg.data.balance_datasets:
        raise ConfigError("data.balance_sharpness_bins needs data.balance_datasets")
    labels = train_rows["label"].to_numpy(np.int64)
    datasets = [str(d) for d in train_rows["dataset"]]
    sharpness = None
    if cfg.data.balance_sharpness_bins or cfg.data.match_sharpness_p:
        sharpness = np.array([face_sharpness(str(p)) for p in train_rows["crop_path"]])
    matcher = None
    if cfg.data.match_sharpness_p and sharpness is not None:
        matcher = SharpnessMatcher.build(sharpness, datasets, labels, cfg.data.match_sharpness_p)
    train_set = CropDataset(train_rows, spec, train_tf, sbi_p=sbi_probabilities(train_rows, cfg),
                            seed=cfg.seed, blend=cfg.data.blend, jpeg_pair=pair, pair_codec=consistency.codec,
                            identity_p=cfg.data.identity_blend_ratio, match_sharpness=matcher,
                            part_cutout_p=cfg.data.part_cutout_p,
                            part_cutout_parts=cfg.data.part_cutout_parts)
    val_sbi = None
    if 1 not in set(val_rows["label"]):  # real-only validation: every other real becomes a fixed SBI fake
        reals = np.flatnonzero(val_rows["label"].to_numpy() == 0)
        val_sbi = np.zeros(len(val_rows), bool)
        val_sbi[reals[1::2]] = True
        log.info("validation has no fakes: %d of its reals are self-blended (fixed per row)", val_sbi.sum())
    val_set = CropDataset(val_rows, spec, val_tf,
                          sbi_p=0.0 if val_sbi is None else val_sbi.astype(np.float64), seed=cfg.seed + 1,
                          # whole-face blends only, so validation stays comparable between recipes
                          blend=cfg.data.blend.model_copy(update={"part_p": 0.0}))
    if cfg.data.class_balance and cfg.data.balance_datasets:  # pair_sources composes with either
        raise ConfigError("data.class_balance and data.balance_datasets: choose one")
    units: list[str] | None = None
    if cfg.data.balance_datasets:
        units = datasets
        if (bins := cfg.data.balance_sharpness_bins) and sharpness is not None:
            units = sharpness_strata(sharpness, datasets, labels, bins)
    order = OrderSpec(train_set.labels, train_set.groups, cfg.seed, class_balance=cfg.data.class_balance,
                      pair_sources=cfg.data.pair_sources, datasets=units, mixed_sbi=cfg.data.mixed_sbi_ratio)
    sampler = ShardedBatchSampler(order, cfg.batch_size, world_size=info.world_size, rank=info.rank,
                                  grad_accum=cfg.optim.grad_accum)
    workers = cfg.data.num_workers
    common: dict[str, object] = {"num_workers": workers, "pin_memory": info.device.type == "cuda",
                                 "persistent_workers": workers > 0}
    # A private generator: the loader's base-seed draw must not consume the global torch RNG.
    train_loader: DataLoader[dict[str, object]] = DataLoader(
        train_set, batch_sampler=sampler, generator=torch.Generator().manual_seed(cfg.seed), **common)  # type: ignore[arg-type]
    val_loader: DataLoader[dict[str, object]] = DataLoader(
        val_set, batch_sampler=ShardedEvalSampler(len(val_set), cfg.batch_size, world_size=info.world_size,
                                                  rank=info.rank),
        generator=torch.Generator().manual_seed(cfg.seed), **common)  # type: ignore[arg-type]
    log.info("train: %d crops (%d real, %d fake) | val: %d crops", len(train_set),
             int((train_set.labels == 0).sum()), int((train_set.labels == 1).sum()), len(val_set))
    return RunData(train_set, val_set, sampler, train_loader, val_loader, protocol, val_rows)


def build_model(cfg: TrainConfig, info: DistInfo, *, pretrained: bool | str) -> nn.Module:
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    model = create_model(cfg.model.arch, pretrained=pretrained, drop_rate=cfg.model.drop_rate)
    if cfg.model.freeze_backbone:
        backbone = getattr(model, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise ConfigError(f"model.freeze_backbone: {cfg.model.arch} has no .backbone")
        backbone.requires_grad_(False)
    if cfg.model.sync_bn and info.distributed and info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(info.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
