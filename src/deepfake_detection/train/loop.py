"""One training epoch and one prediction pass; no file I/O here (the trainer owns the run folder)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from deepfake_detection.train.distributed import DistInfo, all_gather, all_reduce_sum


@dataclass(frozen=True)
class StepContext:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: float32 (always on CPU)
    channels_last: bool
    grad_accum: int = 1
    grad_clip: float | None = None
    label_smoothing: float = 0.0
    freeze_backbone: bool = False
    progress: bool = True
    consistency_weight: float = 0.0  # JPEG consistency (ConsistencyConfig): batches hold image_jpeg
    consistency_detach_clean: bool = False
    sam_rho: float = 0.0  # sharpness-aware minimisation (OptimConfig.sam_rho); 0: one pass per step

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def inputs(self, batch: dict[str, Any], key: str = "image") -> torch.Tensor:
        x: torch.Tensor = batch[key].to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def set_train_mode(core: nn.Module, freeze_backbone: bool) -> None:
    core.train()
    if freeze_backbone:  # a frozen backbone keeps its BatchNorm statistics too: eval mode
        backbone = getattr(core, "backbone", None)
        if isinstance(backbone, nn.Module):
            backbone.eval()


def bce_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample BCE-with-logits in float32; smoothing moves targets to s/2 and 1 - s/2."""
    target = labels * (1.0 - smoothing) + 0.5 * smoothing
    return F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")


def consistency_losses(logits: torch.Tensor, labels: torch.Tensor, weight: float,
                       smoothing: float = 0.0, detach_clean: bool = False) -> torch.Tensor:
    """Per-sample JPEG-consistency loss; `logits` holds the clean views, then their JPEG copies:
    the mean BCE of the two views + weight x their squared logit difference (with `detach_clean`,
    measured against a constant clean logit: only the compressed view is pulled)."""
    clean, compressed = logits.float().chunk(2)
    bce = (bce_loss(clean, labels, smoothing) + bce_loss(compressed, labels, smoothing)) / 2
    target = clean.detach() if detach_clean else clean
    return bce + weight * (target - compressed) ** 2


def batch_losses(model: nn.Module, batch: dict[str, Any], x: torch.Tensor, y: torch.Tensor,
                 ctx: StepContext) -> torch.Tensor:
    """Per-sample training losses of one micro-batch (with its JPEG copies under consistency)."""
    if ctx.consistency_weight > 0:  # one forward pass: BatchNorm sees both views together
        with ctx.autocast():
            logits = model(torch.cat([x, ctx.inputs(batch, "image_jpeg")])).squeeze(1)
        return consistency_losses(logits, y, ctx.consistency_weight, ctx.label_smoothing,
                                  ctx.consistency_detach_clean)
    with ctx.autocast():
        logits = model(x).squeeze(1)
    return bce_loss(logits, y, ctx.label_smoothing)


@torch.no_grad()
def sam_ascend(params: list[nn.Parameter], rho: float) -> list[torch.Tensor | None]:
    """SAM's first half: move each weight by rho x gradient / (global gradient L2 norm); returns the
    moves, for `sam_return`."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return [None] * len(params)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = rho / (norm + 1e-12)
    moves: list[torch.Tensor | None] = []
    for p in params:
        move = None if p.grad is None else (p.grad * scale).to(p.dtype)
        if move is not None:
            p.add_(move)
        moves.append(move)
    return moves


@torch.no_grad()
def sam_return(params: list[nn.Parameter], moves: list[torch.Tensor | None]) -> None:
    """Undo `sam_ascend`; the gradients now held (taken at the moved weights) stay for the step."""
    for p, move in zip(params, moves, strict=True):
        if move is not None:
            p.sub_(move)


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with the batch's statistics but keep their running ones: SAM's second
    pass runs at perturbed weights and must not count the batch twice."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) x running + 0 x batch
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)  # type: ignore[union-attr]


def train_one_epoch(
    model: nn.Module, core: nn.Module, loader: Iterable[dict[str, Any]], optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, ctx: StepContext,
    info: DistInfo, *, desc: str = "train",
) -> float:
    """Returns the mean training loss over every sample of every rank."""
    set_train_mode(core, ctx.freeze_backbone)
    params = [p for p in core.parameters() if p.requires_grad]
    total = torch.zeros((), dtype=torch.float64, device=ctx.device)  # no .item() per step: no GPU sync
    count = 0
    optimizer.zero_grad(set_to_none=True)
    n = len(loader)  # type: ignore[arg-type]
    bar = tqdm(loader, total=n, desc=desc, disable=not (ctx.progress and info.is_main), leave=False,
               file=sys.stderr, dynamic_ncols=True)
    for j, batch in enumerate(bar):
        x, y = ctx.inputs(batch), batch["label"].to(ctx.device)
        step_now = (j + 1) % ctx.grad_accum == 0 or j + 1 == n
        # Between accumulation steps DDP must not all-reduce: gradients are only summed locally.
        sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not step_now else (
            contextlib.nullcontext())
        with sync:
            losses = batch_losses(model, batch, x, y, ctx)
            scaler.scale(losses.mean() / ctx.grad_accum).backward()
        total += losses.detach().sum()
        count += len(y)
        if step_now:
            if ctx.sam_rho > 0:  # grad_accum is 1 and the scaler off (checked): the gradient is whole
                moves = sam_ascend(params, ctx.sam_rho)
                optimizer.zero_grad(set_to_none=True)
                with frozen_batchnorm_stats(core):
                    batch_losses(model, batch, x, y, ctx).mean().backward()
                sam_return(params, moves)
            if ctx.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, ctx.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
    s, c = all_reduce_sum([float(total), float(count)], info)
    return s / max(c, 1.0)


@torch.no_grad()
def predict(core: nn.Module, loader: Iterable[dict[str, Any]], ctx: StepContext, info: DistInfo,
            *, desc: str = "val", tta_hflip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) over the loader's dataset, gathered from every rank, in index order.
    tta_hflip: each logit is the mean of the crop's and its mirror image's (as spec_logits serves)."""
    core.eval()
    idx, logits, labels = [], [], []
    n = len(loader)  # type: ignore[arg-type]
    for batch in tqdm(loader, total=n, desc=desc, disable=not (ctx.progress and info.is_main), leave=False,
                      file=sys.stderr, dynamic_ncols=True):
        with ctx.autocast():
            x = ctx.inputs(batch)
            out = core(x).squeeze(1)
            if tta_hflip:
                out = (out + core(x.flip(-1)).squeeze(1)) / 2
        logits.append(out.float().cpu().numpy())
        labels.append(batch["label"].numpy())
        idx.append(np.asarray(batch["index"]))
    mine = tuple(np.concatenate(a) if a else np.zeros(0) for a in (idx, logits, labels))
    parts = all_gather(mine, info)
    all_idx = np.concatenate([p[0] for p in parts]).astype(np.int64)
    order = np.argsort(all_idx, kind="stable")
    all_logits = np.concatenate([p[1] for p in parts]).astype(np.float64)[order]
    all_labels = np.concatenate([p[2] for p in parts]).astype(np.int64)[order]
    return all_logits, all_labels


def bce_from_logits(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean BCE (no smoothing), stable for any logit."""
    z = np.asarray(logits, np.float64)
    return float(np.mean(np.where(labels == 1, np.logaddexp(0.0, -z), np.logaddexp(0.0, z))))
