"""Logit ensembles: several trained copies of one network served as one model.

Independently trained networks err on different faces; the mean of their logits ranks faces better
and is better calibrated than any one of them (deep ensembles, Lakshminarayanan et al. 2017; the
DFDC winners averaged several EfficientNets). Unlike a weight average (models/soup.py) the members
need not share a starting point, and the cost is one forward pass per member.

An ensemble is one model file like any other: its ModelSpec is the members' (same arch, input size,
normalisation and crop protocol) with `members` set, its weights are the members' under
`members.<i>.`, and `export_onnx` writes one graph, so `Predictor`, `dfd calibrate`, `dfd evaluate`
and `dfd serve` need nothing else. Its calibration is reset: `dfd calibrate` fits it for the mean.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from deepfake_detection.errors import ModelError
from deepfake_detection.models.spec import ModelSpec


class LogitEnsemble(nn.Module):
    """(N, 3, S, S) -> (N, 1): the mean of the members' logits."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ModelError("an ensemble needs at least two members")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


def build_ensemble(arch: str, members: int) -> LogitEnsemble:
    """An untrained ensemble of `members` copies of `arch` (for loading an ensemble file)."""
    from deepfake_detection.models.registry import create_model

    return LogitEnsemble([create_model(arch) for _ in range(members)])


def ensemble_model_files(paths: Sequence[str | os.PathLike[str]], *,
                         name: str = "") -> tuple[LogitEnsemble, ModelSpec]:
    """(ensemble, spec) of single-network model files of one arch served the same way; ModelError for
    fewer than two files, mismatched specs or a member that is itself an ensemble."""
    from deepfake_detection.models.files import load_model_file
    from deepfake_detection.models.soup import common_spec

    spec = common_spec(paths)  # headers only; `members` agrees across the files too
    if spec.members > 1:
        raise ModelError(f"{', '.join(map(str, paths))}: already ensembles; give their members instead")
    model = LogitEnsemble([load_model_file(path)[0] for path in paths])
    spec = replace(spec, members=len(paths), name=name, temperature=1.0, bias=0.0, threshold=0.5)
    return model.eval(), spec


__all__ = ["LogitEnsemble", "build_ensemble", "ensemble_model_files"]
