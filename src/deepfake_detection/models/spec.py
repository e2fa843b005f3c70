"""ModelSpec: everything needed to use a set of weights, stored with them (safetensors / ONNX metadata)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from deepfake_detection.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CropProtocol:
    """How a face box becomes a model input. Bump `version` whenever the behaviour changes,
    so a model never silently receives crops made differently from its training crops."""

    version: int = 1
    scale: float = 1.3  # square side = max(box w, box h) * scale, centred on the box
    align: bool = False  # 5-point similarity alignment before cropping
    # The face detector whose boxes the model was trained on: boxes of another detector frame faces
    # differently (tighter, lower), a shift the model never saw. Inference uses it by default.
    detector: str = "retinaface"


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop: CropProtocol = field(default_factory=CropProtocol)
    threshold: float = 0.5  # on the calibrated probability; >= threshold means "fake"
    temperature: float = 1.0  # probability = sigmoid(logit / temperature + bias) ...
    bias: float = 0.0  # ... (Platt scaling; 0: temperature scaling alone, as models before it)
    name: str = ""
    # Test-time augmentation: the logit is the mean of the crop's and its mirror image's (twice the
    # classifier compute; temperature and threshold are fitted with it on).
    tta_hflip: bool = False
    # Networks of `arch` whose logits are averaged (models/ensemble.py); 1: a single network.
    members: int = 1

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ModelError(f"ModelSpec.members must be >= 1, got {self.members}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        data = dict(data)
        # Models up to 0.1.0 carried `whole_image` (whole-frame scoring), which no training ever set.
        if data.pop("whole_image", False):
            raise ModelError("this model scores whole frames (whole_image), which is no longer supported")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"unknown ModelSpec fields: {sorted(unknown)}")
        if "crop" in data and isinstance(data["crop"], dict):
            data["crop"] = CropProtocol(**data["crop"])
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(float(v) for v in data[key])
        if "arch" not in data:
            raise ModelError("ModelSpec needs an 'arch'")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, TypeError) as exc:
            raise ModelError(f"invalid ModelSpec JSON: {exc}") from exc
