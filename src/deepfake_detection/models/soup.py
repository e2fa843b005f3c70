"""Weight averaging ("model soup", Wortsman et al. 2022): the element-wise mean of several fine-tuned
copies of one network. Copies that share a starting point sit in one loss basin, and their mean often
generalises better to new sources and degradations than any one of them, at no inference cost.

The mean is a new model: its calibration is reset (temperature 1, bias 0, threshold 0.5) so that it
cannot be served with a fit made for other weights; `dfd calibrate` refits it on validation files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from deepfake_detection.errors import ModelError
from deepfake_detection.models.spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn

# What must agree between ingredients for their mean to be one model served one way.
_SAME = ("arch", "input_size", "mean", "std", "crop", "members")


def common_spec(paths: Sequence[str | os.PathLike[str]]) -> ModelSpec:
    """The first file's spec, once every file is known to hold the same network served the same way
    (read from the headers only: cheap). ModelError for fewer than two files or any mismatch."""
    from deepfake_detection.models.files import read_model_spec

    if len(paths) < 2:
        raise ModelError("averaging or an ensemble needs at least two model files")
    spec = read_model_spec(paths[0])
    for path in paths[1:]:
        other = read_model_spec(path)
        differ = [f for f in _SAME if getattr(other, f) != getattr(spec, f)]
        if differ:
            raise ModelError(f"{path} differs from {paths[0]} in {', '.join(differ)}: not one network")
    return spec


def mixing_weights(count: int, weights: Sequence[float] | None = None) -> list[float]:
    """The weights `average_model_files` uses: uniform when none are given, else the given ones
    divided by their sum. Negative weights are allowed (extrapolating along the line from one file to
    another, as WiSE-FT's mixing coefficient above 1 does); ModelError for the wrong count or a
    non-positive sum."""
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count:
        raise ModelError(f"{len(weights)} weights for {count} model files")
    total = float(sum(weights))
    if not total > 0:  # also refuses NaN
        raise ModelError(f"the weights must sum to a positive number, not {total}")
    return [float(w) / total for w in weights]


def average_model_files(paths: Sequence[str | os.PathLike[str]], *, name: str = "",
                        weights: Sequence[float] | None = None) -> tuple[nn.Module, ModelSpec]:
    """(model, spec): the mean of the model files' weights, uniform unless `weights` are given (see
    `mixing_weights`). Floating tensors are summed in float64; integer buffers (BatchNorm's batch
    counters) are taken from the first file. ModelError as `common_spec` and `mixing_weights` say."""
    import torch

    from deepfake_detection.models.files import load_model_file

    common_spec(paths)
    coefficients = mixing_weights(len(paths), weights)
    model, spec = load_model_file(paths[0])
    first = model.state_dict()
    sums = {k: v.double() * coefficients[0] if v.is_floating_point() else v for k, v in first.items()}
    for path, coefficient in zip(paths[1:], coefficients[1:], strict=True):
        other, _ = load_model_file(path)
        for key, value in other.state_dict().items():  # same arch: same keys and shapes (strict load)
            if value.is_floating_point():
                sums[key] += value.double() * coefficient
    mean = {k: v.to(first[k].dtype) if v.is_floating_point() else v for k, v in sums.items()}
    with torch.no_grad():
        model.load_state_dict(mean, strict=True)
    spec = replace(spec, name=name, temperature=1.0, bias=0.0, threshold=0.5)
    return model.eval(), spec


__all__ = ["average_model_files", "common_spec", "mixing_weights"]
