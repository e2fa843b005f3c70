"""Typed training configuration: YAML in, `--set a.b=value` overrides, unknown keys are errors.

    cfg = load_config("configs/default.yaml", ["optim.lr=1e-3", "data.sbi=false"])
    save_config(cfg, run_dir / "config.yaml")   # every run keeps the exact config it ran with

Override values are parsed with `yaml.safe_load` (so `1e-3` is a float, `false` a bool, `[1, 2]` a
list) and never evaluated. Relative paths (manifests, `out`, a pretrained file) are relative to the
working directory, like any command-line path.

Batch size: `batch_size` is per process and per micro-batch. One optimiser step sees
batch_size x world_size x optim.grad_accum samples (the global batch); the learning rate is NOT
rescaled automatically when any of those change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from deepfake_detection.data.augment import AugmentConfig
from deepfake_detection.data.blend import CUTOUT_PARTS, BlendConfig, CutoutPart
from deepfake_detection.errors import DFDError

__all__ = [
    "ConfigError", "ConsistencyConfig", "DataConfig", "ModelConfig", "OptimConfig", "ScheduleConfig",
    "TrainConfig",
    "apply_overrides", "load_config", "save_config",
]


class ConfigError(DFDError, ValueError):
    """A training config is unreadable, has unknown keys, or values of the wrong type or range."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    manifests: list[str] = Field(min_length=1)  # concatenated; a single path is accepted too
    sbi: bool = True  # self-blended pseudo-fakes made on the fly from real training crops
    sbi_ratio: float = Field(default=0.5, ge=0.0, le=1.0)  # fraction of real crops blended (label 1)
    blend: BlendConfig = Field(default_factory=BlendConfig)  # the self-blending recipe (data/blend.py)
    # Share of those blends whose face comes from another person's real crop of the same dataset
    # (Face X-ray / I2G blended images, data/blend.py `identity_blend`) instead of the crop itself.
    identity_blend_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    use_fakes: bool = True  # false: real-only SBI training (SBI paper); validation keeps its fakes
    class_balance: bool = False  # sample so each manifest label is half of every epoch
    # Every dataset half real, half fake, so no source (FF++ YouTube frames vs web photos) stands for a
    # label: datasets with fakes repeat their minority class and keep their reals unblended; datasets
    # without fakes (real photo pools) get theirs from self-blending (sbi_ratio).
    balance_datasets: bool = False
    # With balance_datasets: the share of draws of a real crop from a dataset WITH fakes (FF++ frames)
    # that are self-blended, so blending traces are also learnt on that source's own faces (the SBI
    # recipe); that dataset's own fakes are drawn 1 - 2x as often, keeping it half real, half fake.
    mixed_sbi_ratio: float = Field(default=0.0, ge=0.0, lt=0.5)
    # With balance_datasets: balance real and fake draws within this many sharpness bins of each
    # dataset (train/sharpness.py), so overall blur, which differs by FF++ method, stands for no label.
    balance_sharpness_bins: int = Field(default=0, ge=0, le=20)
    # Per training draw of a row from a dataset holding both classes, the chance that it is blurred down
    # to the sharpness of a random crop of the other class (train/sharpness.py, SharpnessMatcher): at 1
    # both classes share one sharpness distribution, so blur stands for no label. 0: off.
    match_sharpness_p: float = Field(default=0.0, ge=0.0, le=1.0)
    # Per training draw, the chance that one face part (eyes, nose or mouth) is painted black on the
    # crop, either class, after any blend (data/blend.py `cut_out_face_part`). 0: off.
    part_cutout_p: float = Field(default=0.0, ge=0.0, le=1.0)
    # The parts cutout draws from (uniformly); without the mouth, reenactment fakes (which change
    # mostly the mouth) keep their evidence.
    part_cutout_parts: tuple[CutoutPart, ...] = Field(default=CUTOUT_PARTS, min_length=1)
    # real and fake draws of one `group` share a micro-batch (GenD); keeps either balance's draws
    pair_sources: bool = False
    augment: AugmentConfig | None = Field(default_factory=AugmentConfig)  # null: no augmentation
    num_workers: int = Field(default=2, ge=0)
    max_train_samples: int | None = Field(default=None, ge=1)  # caps for quick runs
    max_val_samples: int | None = Field(default=None, ge=2)

    @field_validator("manifests", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str | Path) else v


class ModelConfig(_Strict):
    arch: str = "efficientnet_lite0"
    pretrained: StrictBool | str = False  # True: offline ImageNet weights; "hub"; or a backbone file
    drop_rate: float = Field(default=0.2, ge=0.0, lt=1.0)
    input_size: int | None = Field(default=None, ge=8)  # None: the architecture's default
    freeze_backbone: bool = False  # only the head trains; backbone BN statistics stay frozen too
    sync_bn: bool = False  # SyncBatchNorm under DDP on CUDA (torch has no CPU SyncBatchNorm)
    # Served with mirror-image TTA (spec.tta_hflip): validation, checkpoint choice and calibration
    # then score each crop as serving will, the mean logit of it and its mirror image.
    tta_hflip: bool = False


class OptimConfig(_Strict):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(default=3e-4, gt=0.0)
    weight_decay: float = Field(default=0.05, ge=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)  # SGD only
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=0.5)  # targets become s/2 and 1 - s/2
    grad_accum: int = Field(default=1, ge=1)
    grad_clip: float | None = Field(default=None, gt=0.0)  # max global L2 norm; null: no clipping
    # Sharpness-aware minimisation (Foret et al. 2021; SBI trains with it, rho 0.05): each step takes its
    # gradient at the weights moved rho along the normalised first gradient (two passes a step). 0: off.
    sam_rho: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sam_needs_whole_steps(self) -> OptimConfig:
        if self.sam_rho > 0 and self.grad_accum > 1:  # the perturbation needs the step's whole gradient
            raise ValueError("optim.sam_rho needs optim.grad_accum 1")
        return self


class ScheduleConfig(_Strict):
    name: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = Field(default=0.0, ge=0.0)  # linear warm-up, per optimiser step
    step_size: float = Field(default=3.0, gt=0.0)  # epochs between decays ("step")
    gamma: float = Field(default=0.1, gt=0.0, le=1.0)
    min_lr_ratio: float = Field(default=0.0, ge=0.0, le=1.0)  # cosine floor, fraction of lr


class ConsistencyConfig(_Strict):
    """JPEG consistency: every training crop also goes through the network as a JPEG copy (quality drawn
    from `jpeg_quality`, encoded on the final model-input crop, as compression reaches a served face);
    the loss is the mean BCE of both views plus `weight` x the mean squared difference of their logits,
    so evidence that compression erases cannot decide a verdict alone. weight 0: off (one view).
    `codec: h264`: the second view is one H.264 frame at a CRF drawn from `h264_crf` instead (a video
    codec's loss, evaluate/robustness.py h264). `detach_clean`: the clean logit is the target (no
    gradient through it in the gap term), so the gap moves the compressed view toward the clean verdict
    and never pulls clean evidence toward what the codec leaves."""

    weight: float = Field(default=0.0, ge=0.0)
    codec: Literal["jpeg", "h264"] = "jpeg"
    detach_clean: bool = False
    jpeg_quality: tuple[int, int] = (30, 80)
    h264_crf: tuple[int, int] = (30, 44)

    @field_validator("jpeg_quality", "h264_crf")
    @classmethod
    def _range(cls, v: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        lo, hi = (1, 100) if info.field_name == "jpeg_quality" else (0, 51)  # JPEG quality, H.264 CRF
        if not lo <= v[0] <= v[1] <= hi:
            raise ValueError(f"need {lo} <= low <= high <= {hi}, got {v}")
        return v


class TrainConfig(_Strict):
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig)
    epochs: int = Field(default=8, ge=1)
    batch_size: int = Field(default=32, ge=2)  # per process, per micro-batch (BatchNorm needs >= 2)
    seed: int = Field(default=0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"  # CUDA only; CPU always trains in float32
    channels_last: bool = False
    early_stopping_patience: int | None = Field(default=None, ge=1)  # epochs without a better val AUC
    out: str = "runs/default"
    threshold_strategy: Literal["youden", "f1", "fpr"] = "youden"
    target_fpr: float = Field(default=0.05, ge=0.0, le=1.0)  # for threshold_strategy "fpr"
    # Where temperature and threshold are fitted on the validation split: "product" runs its source
    # files through decode, detect, crop, classify (what users get; crops when the sources are gone),
    # "crops" uses the stored crops.
    calibrate_on: Literal["product", "crops"] = "product"
    # How probabilities are calibrated: "platt" fits sigmoid(z / T + bias) (a slope and an offset:
    # balanced, self-blended training leaves the logits offset on real material), "temperature"
    # fits T alone (bias 0). Neither changes the ranking or the verdicts, only the probabilities.
    calibration: Literal["platt", "temperature"] = "platt"
    # What picks the checkpoint (and counts for early stopping): "auc" pools every validation crop;
    # "within_source_auc" ranks fakes only against reals of their own dataset, so telling one
    # source's format from another's (web photos from video frames) earns nothing. Both are logged.
    select_metric: Literal["auc", "within_source_auc"] = "auc"
    tensorboard: bool = True  # used when torch.utils.tensorboard imports; silent otherwise

    @model_validator(mode="after")
    def _sam_without_fp16(self) -> TrainConfig:
        # GradScaler unscales once per step and SAM takes two gradients; refused here, not on the GPU
        # only, so the config fails the same way on every machine and before any data is built.
        if self.optim.sam_rho > 0 and self.amp == "fp16":
            raise ValueError("optim.sam_rho needs amp bf16 or none, not fp16")
        return self


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Set `a.b.c=value` items in a nested dict (a copy); values parsed with yaml.safe_load."""
    out: dict[str, Any] = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"override {item!r}: expected key.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            if not isinstance(child, dict):  # also replaces a null section (e.g. `augment: null`)
                child = node[p] = {}
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from None


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (None: start from defaults, overrides must then give data.manifests)."""
    data: Any = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        except UnicodeDecodeError:  # an image or a binary file given as the config
            raise ConfigError(f"{path}: not a text (YAML) file") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return config_from_dict(apply_overrides(data, overrides), str(path or "config"))


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain JSON types only (lists, not tuples): fit for YAML, JSON and weights-only checkpoints."""
    out: dict[str, Any] = cfg.model_dump(mode="json")
    return out


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")
    return path
