"""Architecture registry: names -> backbone builders, plus create_model / list_models / default_spec.

torch/timm are imported lazily so `import deepfake_detection` stays light; the zoo module
(which registers the built-in architectures) is imported on first use."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from deepfake_detection.errors import ModelError, UnknownModelError
from deepfake_detection.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

if TYPE_CHECKING:
    from torch import nn

# A builder returns a backbone mapping (N,3,H,W) -> (N, F); it must set `num_features = F`.
# `hub=True` asks it to let timm/torchvision download ImageNet weights (explicit opt-in only).
Builder = Callable[[bool], "nn.Module"]
B = TypeVar("B", bound=Builder)


@dataclass(frozen=True)
class ArchInfo:
    name: str
    input_size: int
    params: float  # millions, backbone + head
    offline_pretrained: bool  # pretrained=True works without network on this install
    description: str
    min_input_size: int = 32


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: Builder
    input_size: int
    pretrained_source: str | None
    description: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    min_input_size: int


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str,
    *,
    input_size: int,
    pretrained_source: str | None = None,
    description: str,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    min_input_size: int = 32,
) -> Callable[[B], B]:
    """Decorator registering a backbone builder under `name`.

    `pretrained_source` names an offline weight source in models.pretrained.OFFLINE_SOURCES;
    `mean`/`std` are the normalisation the (hub or offline) ImageNet weights expect."""

    def deco(builder: B) -> B:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = _Entry(
            name, builder, input_size, pretrained_source, description, mean, std, min_input_size
        )
        return builder

    return deco


@functools.cache
def _load_zoo() -> None:
    from deepfake_detection.models import zoo  # noqa: F401  (registers the built-ins)


def _entry(name: str) -> _Entry:
    _load_zoo()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown architecture {name!r}{hint} (known: {', '.join(sorted(_REGISTRY))})"
        ) from None


def model_names() -> list[str]:
    _load_zoo()
    return sorted(_REGISTRY)


def create_model(name: str, *, pretrained: bool | str = False, drop_rate: float = 0.2) -> nn.Module:
    """Build backbone + BinaryHead. pretrained: False (random init), True (offline ImageNet weights,
    where an offline source exists), "hub" (let timm download), or a path to a local backbone
    file (.safetensors, or .pth/.pt loaded with weights_only=True)."""
    from deepfake_detection.models import pretrained as pt
    from deepfake_detection.models.heads import DeepfakeClassifier

    entry = _entry(name)
    hub = pretrained == "hub"
    backbone = entry.builder(hub)
    if pretrained is True:
        if entry.pretrained_source is None:
            raise ModelError(
                f"no offline ImageNet weights exist for {name!r}; pass pretrained='/path/to/backbone"
                ".safetensors' (a local file) or pretrained='hub' to download them"
            )
        pt.apply_backbone_state(backbone, pt.load_offline(entry.pretrained_source), source=name)
    elif isinstance(pretrained, str) and not hub:
        pt.apply_backbone_state(backbone, pt.load_local_file(Path(pretrained)), source=pretrained)
    elif pretrained is not False and not hub:
        raise ModelError(f"pretrained must be False, True, 'hub' or a file path, not {pretrained!r}")
    num_features = backbone.num_features  # set by every builder (see Builder)
    if not isinstance(num_features, int):
        raise ModelError(f"builder for {name!r} did not set an int num_features")
    return DeepfakeClassifier(backbone, num_features, drop_rate)


@functools.cache
def _param_count(name: str) -> float:
    # Built on the meta device: counts parameters without allocating (VGG16 would be 530 MB).
    import torch

    with torch.device("meta"):
        model = create_model(name)
    return sum(p.numel() for p in model.parameters()) / 1e6


def list_models() -> list[ArchInfo]:
    from deepfake_detection.models.pretrained import offline_available

    infos = []
    for name in model_names():
        e = _REGISTRY[name]
        offline = e.pretrained_source is not None and offline_available(e.pretrained_source)
        params = round(_param_count(name), 3)
        infos.append(ArchInfo(name, e.input_size, params, offline, e.description, e.min_input_size))
    return infos


def default_spec(arch: str, /, **overrides: Any) -> ModelSpec:
    """The ModelSpec an architecture is trained with unless told otherwise. `arch` is positional-only
    so the spec's own `name` field can be overridden: default_spec("custom_cnn", name="my-run")."""
    e = _entry(arch)
    spec = ModelSpec(arch=arch, input_size=e.input_size, mean=e.mean, std=e.std, name=arch)
    if "arch" in overrides and overrides["arch"] != arch:
        raise ModelError(f"default_spec({arch!r}) cannot override arch to {overrides['arch']!r}")
    try:
        spec = dataclasses.replace(spec, **overrides)
    except TypeError as exc:
        raise ModelError(f"invalid ModelSpec override: {exc}") from exc
    if spec.input_size < e.min_input_size:
        raise ModelError(f"{arch} needs input_size >= {e.min_input_size}, got {spec.input_size}")
    return spec
