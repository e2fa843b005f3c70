"""Optimiser and learning-rate schedule (per optimiser step, linear warm-up first)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from deepfake_detection.train.config import OptimConfig, ScheduleConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("no trainable parameters")
    if cfg.name == "sgd":
        return torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.momentum > 0)
    if cfg.name == "adam":
        return torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """step -> multiplier of the base lr. The step counts optimiser steps already taken."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)  # never 0: the first step already moves
        if cfg.name == "constant":
            return 1.0
        if cfg.name == "step":
            return float(cfg.gamma ** math.floor(step / (cfg.step_size * steps_per_epoch)))
        progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int,
                    epochs: int) -> LambdaLR:
    # LambdaLR's state dict holds only plain numbers for a function lambda: fit for weights-only loads.
    return LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch, steps_per_epoch * epochs))
