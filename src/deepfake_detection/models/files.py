"""Model files: safetensors weights with the ModelSpec JSON in the header metadata. Never pickle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from deepfake_detection.errors import ModelError
from deepfake_detection.io.atomic import atomic_path
from deepfake_detection.models.paths import SPEC_KEY, WEIGHTS_SUFFIX
from deepfake_detection.models.spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn

def save_model(model: nn.Module, spec: ModelSpec, path: str | os.PathLike[str]) -> Path:
    from safetensors.torch import save_file

    from deepfake_detection.models.registry import model_names

    path = Path(path)
    if path.suffix != WEIGHTS_SUFFIX:
        raise ModelError(f"model files are .safetensors, not {path.name!r}")
    if spec.arch not in model_names():
        raise ModelError(f"spec.arch {spec.arch!r} is not a registered architecture")
    # clone(): safetensors refuses tensors sharing storage, and we want a CPU snapshot anyway.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={SPEC_KEY: spec.to_json(), "format": "pt"})
    return path


def read_model_spec(path: str | os.PathLike[str]) -> ModelSpec:
    """The spec alone, from the safetensors header (cheap: reads no tensor data)."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise ModelError(f"cannot read model file {path}: {exc}") from exc
    if SPEC_KEY not in meta:
        raise ModelError(f"{path} has no {SPEC_KEY!r} metadata; not a deepfake-detection model file")
    return ModelSpec.from_json(meta[SPEC_KEY])


def load_model_file(path: str | os.PathLike[str]) -> tuple[nn.Module, ModelSpec]:
    """Rebuild create_model(spec.arch) (or an ensemble of `spec.members` of them) and load the weights
    strictly; returns the model in eval mode."""
    import torch
    from safetensors.torch import load_file

    from deepfake_detection.models.registry import create_model

    path = _existing(path)
    spec = read_model_spec(path)
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise ModelError(f"cannot read model file {path}: {exc}") from exc

    def build() -> nn.Module:
        if spec.members > 1:
            from deepfake_detection.models.ensemble import build_ensemble

            return build_ensemble(spec.arch, spec.members)
        return create_model(spec.arch)

    # Built on the meta device and filled with assign=True: skips random init (seconds for VGG16).
    with torch.device("meta"):
        model = build()
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelError(f"{path} does not match architecture {spec.arch!r}: {exc}") from exc
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):  # non-persistent buffers
        model = build()
        model.load_state_dict(state, strict=True)
    return model.eval(), spec


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if path.suffix != WEIGHTS_SUFFIX:
        raise ModelError(f"refusing {path}: model files must be .safetensors (pickle files can run code)")
    return path
