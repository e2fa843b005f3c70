"""The one classification head every architecture shares, and the backbone+head wrapper."""

from __future__ import annotations

import torch
from torch import nn


class BinaryHead(nn.Module):
    """BatchNorm1d -> Dropout -> Linear(features, 1).

    BatchNorm first so features of very different scales (VGG's 4096-d vs. a 256-d custom CNN)
    reach the linear layer comparably; one logit because the task is binary (fake vs. real)."""

    def __init__(self, num_features: int, drop_rate: float = 0.2) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(num_features)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.norm(x)))


class DeepfakeClassifier(nn.Module):
    """(N,3,H,W) normalised float32 -> (N,1) logits. `backbone` maps images to (N, num_features)."""

    def __init__(self, backbone: nn.Module, num_features: int, drop_rate: float = 0.2) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.head = BinaryHead(num_features, drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
