"""AlexNet (Krizhevsky et al. 2012), the baseline SqueezeNet is measured against.

``alexnet`` follows torchvision's single-tower layout (61,100,840 parameters at 1000 classes);
``alexnet_cifar`` is a CIFAR-sized version for 32x32 input (3x3 convs, 2x2 pools, 1024-wide
classifier).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from squeezelab.models.registry import register_model


class AlexNet(nn.Module):
    def __init__(self, features: nn.Sequential, pool_size: int, flat: int, hidden: int,
                 num_classes: int, dropout: float):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(flat, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model(input_size=224, tags=("baseline",))
def alexnet(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5):
    """AlexNet, torchvision layout: 61,100,840 parameters at 1000 classes."""
    features = nn.Sequential(
        nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    return AlexNet(features, 6, 256 * 6 * 6, 4096, num_classes, dropout)


@register_model(input_size=32, num_classes=10, tags=("cifar", "baseline"))
def alexnet_cifar(num_classes: int = 10, in_chans: int = 3, dropout: float = 0.5):
    """AlexNet sized for 32x32 input: five 3x3 convs, three 2x2 pools, a 1024-wide classifier."""
    features = nn.Sequential(
        nn.Conv2d(in_chans, 64, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2),
        nn.Conv2d(64, 192, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2),
    )
    return AlexNet(features, 4, 256 * 4 * 4, 1024, num_classes, dropout)
