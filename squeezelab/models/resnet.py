"""ResNets for CIFAR (He et al. 2016, arXiv 1512.03385): a 3x3 stem, no stem pool, four stages.

``resnet18_cifar``: two basic blocks a stage, 11,173,962 parameters at 10 classes, a teacher for
distillation. ``resnet_bottleneck_cifar``: two bottleneck blocks a stage (``layers.Bottleneck``:
1x1 reduce, 3x3, 1x1 expand by 4), narrow enough to sit beside the compact models.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.layers import Bottleneck
from squeezelab.models.registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, in_chans: int, out_chans: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_chans != out_chans:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chans, out_chans, 1, stride, bias=False), nn.BatchNorm2d(out_chans)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """Stem conv + BN + ReLU at full resolution, four stages (the first at stride 1, the others
    halving the maps) of ``blocks[i]`` blocks at width ``width * 2**i``, global average pool,
    dropout, linear. ``block``: "basic" (two 3x3 convs) or "bottleneck" (the width is the
    narrow middle; the stage outputs 4x that)."""

    def __init__(self, num_classes: int, in_chans: int, dropout: float, width: int = 64,
                 blocks: tuple[int, ...] = (2, 2, 2, 2), block: str = "basic"):
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must give four stages of >= 1 block, got {blocks!r}")
        self.conv1 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers = []
        chans = width
        for i, n in enumerate(blocks):
            mid = width * 2**i
            stage: list[nn.Module] = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                if block == "basic":
                    stage.append(BasicBlock(chans, mid, stride))
                    chans = mid
                else:
                    stage.append(Bottleneck(chans, mid, stride))
                    chans = stage[-1].out_channels
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(chans, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))


@register_model(input_size=32, num_classes=10, tags=("cifar", "teacher"))
def resnet18_cifar(num_classes: int = 10, in_chans: int = 3, dropout: float = 0.0,
                   width: int = 64):
    """ResNet-18 for 32x32 input (11,173,962 parameters at 10 classes): a distillation teacher."""
    return ResNetCifar(num_classes, in_chans, dropout, width)


@register_model(input_size=32, num_classes=10, tags=("cifar", "compact"))
def resnet_bottleneck_cifar(num_classes: int = 10, in_chans: int = 3, dropout: float = 0.0,
                            width: int = 16, blocks: tuple[int, ...] = (2, 2, 2, 2)):
    """ResNet-26 of bottleneck blocks for 32x32 (middle widths 16-128, outputs 64-512)."""
    return ResNetCifar(num_classes, in_chans, dropout, width, tuple(blocks), block="bottleneck")
