"""torchrun support: one process per device; a plain single process when WORLD_SIZE is unset or 1."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from deepfake_detection.train.config import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    world_size: int
    rank: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but CUDA is not available")
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(device_pref: str) -> DistInfo:
    """Read torchrun's env (WORLD_SIZE/RANK/LOCAL_RANK); init nccl on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
        log.info("process group: rank %d of %d on %s", rank, world, device)
    return DistInfo(world, rank, local, device)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    if not info.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def all_gather(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj` (numpy arrays and plain data: our own processes only, so pickle is safe)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's BatchNorm running statistics everywhere: each rank updated its own in the last
    forward pass, and evaluation must give every rank (and the checkpoint) the same model."""
    if info.distributed:
        for buf in module.buffers():
            dist.broadcast(buf, 0)


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    if not info.distributed:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, 0)
    return box[0]


__all__ = ["DistInfo", "all_gather", "all_reduce_sum", "barrier", "broadcast_buffers", "broadcast_object",
           "cleanup", "resolve_device", "setup"]
