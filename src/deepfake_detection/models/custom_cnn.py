"""A small, fast CNN trained from scratch: the baseline and the quick-to-train option."""

from __future__ import annotations

import torch
from torch import nn

# ~0.56M parameters; each block halves the resolution (128 px -> 4x4 before pooling).
CHANNELS = (24, 48, 96, 160, 256)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CustomCNN(nn.Module):
    """5 x (conv3x3 stride 2 -> BN -> ReLU) -> global average pool -> (N, 256) features."""

    def __init__(self, channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        layers = []
        c_in = 3
        for c_out in channels:
            layers.append(_block(c_in, c_out))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)
