"""Training-time augmentation, declared in configuration (the `augment:` block of a training YAML).

    cfg = AugmentConfig.model_validate(yaml_dict)          # unknown keys are errors
    train_tf = build_train_transform(cfg, input_size=224)  # random; real and fake images alike
    eval_tf = build_eval_transform(224)                    # deterministic: resize the whole crop
    x = train_tf(image=crop_rgb_uint8)["image"]            # (224, 224, 3) uint8

Both classes go through the same transform (identical preprocessing, DATA.md): any difference
between them would be a shortcut the model learns instead of the manipulation.

Input crops are stored larger than the model input (e.g. 256 px, made by faces/crop.py). The eval
transform resizes the whole crop to the input size, which is what inference does (crop_face straight
at the input size); the train transform takes a random crop covering `crop_area` of it and resizes
it, so the face scale seen in training stays close to the one seen at inference.

Order of the train pipeline (why): geometry on the stored crop first (rotation needs the margin),
then colour, then degradations (downscale, blur, noise, H.264, JPEG) at the stored resolution, as they
happen in the wild before a face is detected and cropped, then the final crop/resize, then cutout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import cv2
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from deepfake_detection.evaluate.robustness import low_resolution_h264, low_resolution_jpeg

# albumentations 2.x asks PyPI for updates at import time (a 2 s network timeout offline).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402

Range = tuple[float, float]
IntRange = tuple[int, int]


class AugmentConfig(BaseModel):
    """Probabilities (`*_p`) and ranges of each augmentation. Defaults follow CNNDetection (blur
    sigma 0..3 and JPEG 30..100, each p=0.5) plus the usual mild geometric and colour jitter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hflip_p: float = Field(default=0.5, ge=0.0, le=1.0)
    rotate_deg: float = Field(default=10.0, ge=0.0, le=45.0)
    rotate_p: float = Field(default=0.3, ge=0.0, le=1.0)
    brightness: float = Field(default=0.2, ge=0.0, le=1.0)  # +- fraction of 255
    contrast: float = Field(default=0.2, ge=0.0, le=1.0)  # +- fraction
    brightness_contrast_p: float = Field(default=0.5, ge=0.0, le=1.0)
    hue_shift: float = Field(default=10.0, ge=0.0, le=90.0)  # +- degrees (OpenCV hue units x2)
    sat_shift: float = Field(default=20.0, ge=0.0, le=100.0)  # +- on the 0..255 saturation channel
    val_shift: float = Field(default=10.0, ge=0.0, le=100.0)
    hue_saturation_p: float = Field(default=0.3, ge=0.0, le=1.0)
    downscale_range: Range = (0.25, 1.0)  # shrink by this factor, then back up
    downscale_p: float = Field(default=0.2, ge=0.0, le=1.0)
    blur_sigma: Range = (0.0, 3.0)
    blur_p: float = Field(default=0.5, ge=0.0, le=1.0)
    noise_std: Range = (0.0, 0.04)  # Gaussian noise std as a fraction of 255
    noise_p: float = Field(default=0.2, ge=0.0, le=1.0)
    # H.264 (a lone intra frame, evaluate/robustness.py h264) at a random CRF, on a copy shrunk by a
    # factor in h264_scale_range; before JPEG, as a frame grabbed from a video and saved as a photo.
    # Off by default: the stream of every earlier recipe stays bit-identical.
    h264_crf: IntRange = (24, 44)
    h264_p: float = Field(default=0.0, ge=0.0, le=1.0)
    h264_scale_range: Range = (0.5, 1.0)
    jpeg_quality: IntRange = (30, 100)
    jpeg_p: float = Field(default=0.5, ge=0.0, le=1.0)
    # JPEG applied at this fraction of the stored crop's resolution (LowResCodec); (1, 1): at full size
    jpeg_scale_range: Range = (1.0, 1.0)
    # How the final random crop is brought to the input size when it shrinks: "area" (box averaging)
    # or "linear", as `crop_face` warps a face that it shrinks by less than 2x at inference, so that
    # training sees the sharper detail (and JPEG block edges) the product path gives the model.
    resize_filter: Literal["area", "linear"] = "area"
    crop_area: Range = (0.8, 1.0)  # fraction of the stored crop's area the final random crop keeps
    crop_ratio: Range = (0.95, 1.05)  # aspect ratio range of that crop
    cutout_holes: IntRange = (1, 3)
    cutout_size: Range = (0.05, 0.2)  # hole side as a fraction of the input size
    cutout_p: float = Field(default=0.2, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_ranges(self) -> AugmentConfig:
        for name in ("downscale_range", "blur_sigma", "noise_std", "jpeg_quality", "jpeg_scale_range",
                     "h264_crf", "h264_scale_range", "crop_area", "crop_ratio", "cutout_holes",
                     "cutout_size"):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"{name}: need 0 <= low <= high, got ({lo}, {hi})")
        if not 0 < self.downscale_range[0] <= self.downscale_range[1] <= 1.0:
            raise ValueError(f"downscale_range must lie in (0, 1], got {self.downscale_range}")
        if not 0 < self.jpeg_scale_range[0] <= self.jpeg_scale_range[1] <= 1.0:
            raise ValueError(f"jpeg_scale_range must lie in (0, 1], got {self.jpeg_scale_range}")
        if not 0 < self.h264_scale_range[0] <= self.h264_scale_range[1] <= 1.0:
            raise ValueError(f"h264_scale_range must lie in (0, 1], got {self.h264_scale_range}")
        if not self.h264_crf[1] <= 51:
            raise ValueError(f"h264_crf must lie in [0, 51], got {self.h264_crf}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality must lie in [1, 100], got {self.jpeg_quality}")
        if not 0 < self.crop_area[0] <= self.crop_area[1] <= 1.0:
            raise ValueError(f"crop_area must lie in (0, 1], got {self.crop_area}")
        if self.crop_ratio[0] <= 0 or self.cutout_holes[1] < 1 or self.cutout_size[1] > 1.0:
            raise ValueError("crop_ratio must be > 0, cutout_holes >= 1, cutout_size <= 1")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> AugmentConfig:
        """Load from a YAML file: either the augment block itself or a file with an `augment:` key."""
        try:
            data: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:  # as ValueError: callers handle one kind of "bad config"
            raise ValueError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping, got {type(data).__name__}")
        if isinstance(data.get("augment"), dict):
            data = data["augment"]
        return cls.model_validate(data)


def build_train_transform(cfg: AugmentConfig, input_size: int, *, seed: int | None = None) -> A.Compose:
    """The random training pipeline: uint8 RGB crop (any size >= a few px) -> (input_size, input_size)."""
    if input_size < 8:
        raise ValueError(f"input_size must be >= 8, got {input_size}")
    # GaussianBlur divides by sigma: sigma 0 means "no blur", approximate it by a negligible sigma.
    blur_lo = max(cfg.blur_sigma[0], 0.05)
    blur_hi = max(cfg.blur_sigma[1], blur_lo)
    ds_lo, ds_hi = cfg.downscale_range
    transforms: list[Any] = [
        A.HorizontalFlip(p=cfg.hflip_p),
        # Reflect, not black corners: black wedges would be a trivially learnable artefact.
        A.Rotate(limit=(-cfg.rotate_deg, cfg.rotate_deg), border_mode=cv2.BORDER_REFLECT_101, p=cfg.rotate_p),
        A.RandomBrightnessContrast(brightness_limit=(-cfg.brightness, cfg.brightness),
                                   contrast_limit=(-cfg.contrast, cfg.contrast), p=cfg.brightness_contrast_p),
        A.HueSaturationValue(hue_shift_limit=(-cfg.hue_shift, cfg.hue_shift),
                             sat_shift_limit=(-cfg.sat_shift, cfg.sat_shift),
                             val_shift_limit=(-cfg.val_shift, cfg.val_shift), p=cfg.hue_saturation_p),
        A.Downscale(scale_range=(ds_lo, ds_hi),
                    interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR},
                    p=cfg.downscale_p if ds_lo < 1.0 else 0.0),
        A.GaussianBlur(sigma_limit=(blur_lo, blur_hi), p=cfg.blur_p),
        A.GaussNoise(std_range=cfg.noise_std, p=cfg.noise_p),
        *([LowResCodec("h264", cfg.h264_scale_range, cfg.h264_crf, p=cfg.h264_p)] if cfg.h264_p > 0 else []),
        _jpeg_transform(cfg),
        A.RandomResizedCrop(size=(input_size, input_size), scale=cfg.crop_area, ratio=cfg.crop_ratio,
                            interpolation=cv2.INTER_LINEAR,
                            area_for_downscale="image" if cfg.resize_filter == "area" else None, p=1.0),
        A.CoarseDropout(num_holes_range=cfg.cutout_holes, hole_height_range=cfg.cutout_size,
                        hole_width_range=cfg.cutout_size, fill=0, p=cfg.cutout_p),
    ]
    return A.Compose(transforms, seed=seed)


class LowResCodec(A.ImageOnlyTransform):
    """A lossy codec at a lower resolution than the image: shrink by a random factor, encode and
    decode at a random quality (JPEG quality, or H.264 CRF), scale back.

    JPEG (`jpeg_scale_range` < 1): a face that is small in a compressed photo or frame reaches the
    model with its 8x8 JPEG blocks scaled up with the crop, so they cover more of the face than blocks
    of the same quality on the stored crop; Downscale followed by ImageCompression never produces that
    (on fold-4 validation crops, JPEG 50 at half resolution cost v5 0.18 AUC, at full resolution 0.06).
    Measured on the product path it did not help (MODEL_HISTORY.md, ninth session): off by default.

    H.264 (`h264_p`): one intra frame through libx264. FaceForensics++ c40 is H.264 at CRF 40, a bar
    every recipe here misses, and JPEG augmentation does not imitate its smearing. Measured on the
    product path it made a model less robust to the codec, not more (MODEL_HISTORY.md, thirty-seventh
    session): off by default. Both are the perturbations of `dfd evaluate`'s sweep (robustness.py)."""

    def __init__(self, codec: Literal["jpeg", "h264"], scale_range: Range, quality_range: IntRange,
                 p: float = 0.5) -> None:
        super().__init__(p=p)
        self.codec = codec
        self.scale_range = scale_range
        self.quality_range = quality_range

    def get_params(self) -> dict[str, Any]:
        return {"scale": self.py_random.uniform(*self.scale_range),
                "quality": self.py_random.randint(*self.quality_range)}

    def apply(self, img: Any, scale: float, quality: int, **params: Any) -> Any:
        if self.codec == "h264":
            return low_resolution_h264(img, scale, quality)
        return low_resolution_jpeg(img, scale, quality)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("codec", "scale_range", "quality_range")


def _jpeg_transform(cfg: AugmentConfig) -> Any:
    # At full size, albumentations' own transform: earlier runs' augmentation streams stay bit-identical.
    if cfg.jpeg_scale_range == (1.0, 1.0):
        return A.ImageCompression(compression_type="jpeg", quality_range=cfg.jpeg_quality, p=cfg.jpeg_p)
    return LowResCodec("jpeg", cfg.jpeg_scale_range, cfg.jpeg_quality, p=cfg.jpeg_p)


def build_eval_transform(input_size: int, resize_filter: str = "area") -> A.Compose:
    """Deterministic: resize the whole stored crop to the input size with the training's final
    shrink filter (area: INTER_AREA when shrinking; linear: as crop_face serves), so checkpoints
    are picked on crops shrunk as the model was trained."""
    if input_size < 8:
        raise ValueError(f"input_size must be >= 8, got {input_size}")
    if resize_filter not in ("area", "linear"):
        raise ValueError(f"resize_filter must be area or linear, got {resize_filter!r}")
    return A.Compose([A.Resize(input_size, input_size, interpolation=cv2.INTER_LINEAR,
                               area_for_downscale="image" if resize_filter == "area" else None, p=1.0)])
