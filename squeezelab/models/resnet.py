"""ResNet-18 for CIFAR (He et al. 2016, arXiv 1512.03385): a 3x3 stem, no stem pool, four stages
of two basic blocks. 11,173,962 parameters at 10 classes: a teacher for distillation.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

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
    def __init__(self, num_classes: int, in_chans: int, dropout: float, width: int = 64,
                 blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers = []
        chans = width
        for i, n in enumerate(blocks):
            out = width * 2**i
            stage = [BasicBlock(chans, out, 1 if i == 0 else 2)]
            stage += [BasicBlock(out, out, 1) for _ in range(n - 1)]
            layers.append(nn.Sequential(*stage))
            chans = out
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
