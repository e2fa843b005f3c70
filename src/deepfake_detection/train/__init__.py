"""Training: typed YAML configs, a deterministic, resumable, torchrun-ready loop, calibrated export.

    from deepfake_detection.train import load_config, train
    run_dir = train(load_config("configs/tiny.yaml", ["epochs=2", "data.manifests=data/manifest.parquet"]))

Heavy imports (torch, the trainer) happen on first use of `train`, not at import.
"""

from __future__ import annotations

from pathlib import Path

from deepfake_detection.train.config import ConfigError, TrainConfig, load_config, save_config

__all__ = ["ConfigError", "TrainConfig", "load_config", "save_config", "train"]


def train(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None) -> Path:
    """Train the run `config` describes (or continue it from `out/last.ckpt` with resume=True);
    returns the run folder. See trainer.train."""
    from deepfake_detection.train.trainer import train as _train

    return _train(config, resume=resume, stop_after=stop_after)
