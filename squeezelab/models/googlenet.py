"""A small GoogLeNet for 32x32 images (Szegedy et al. 2014, arXiv 1409.4842), built from
``layers.Inception`` modules with dimension reductions.

GoogLeNet's layout, narrowed for CIFAR: a 3x3 stem at 32x32, a 2x2 max-pool, Inception 3a-3b
at 16x16, a pool, 4a-4c at 8x8, a pool, 5a at 4x4, global average pooling, dropout and a linear
classifier. The branch widths are GoogLeNet's Table 1 at half width (4a-4c: their 4a, 4c and
4e rows), so the 1x1 / 3x3 / 5x5 / pool shares of each module are the paper's; BatchNorm after
every conv (Inception-v2's, arXiv 1502.03167) and no auxiliary classifiers.
``factorized=True`` makes every 5x5 branch two 3x3 convs (Inception-v2, arXiv 1512.00567).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from squeezelab.layers import ConvBnAct, Inception
from squeezelab.models.registry import register_model

#: (ch1x1, reduce3x3, ch3x3, reduce5x5, ch5x5, pool_proj) of each module, or "pool" (2x2/2)
_CIFAR_LAYOUT: list = [
    "pool",
    (32, 48, 64, 8, 16, 16),        # 3a -> 128
    (64, 64, 96, 16, 48, 32),       # 3b -> 240
    "pool",
    (96, 48, 104, 8, 24, 32),       # 4a -> 256
    (64, 64, 128, 12, 32, 32),      # 4c -> 256
    (128, 80, 160, 16, 64, 64),     # 4e -> 416
    "pool",
    (128, 80, 160, 16, 64, 64),     # 5a -> 416
]


class GoogLeNetCifar(nn.Module):
    """``stem`` (3x3 conv to ``stem_channels``), ``features`` (Inception modules and pools),
    ``pool`` (global average), ``classifier`` (dropout, linear)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, dropout: float = 0.2,
                 stem_channels: int = 64, factorized: bool = False, layout: list | None = None):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.stem = ConvBnAct(in_chans, stem_channels, 3)
        layers: list[nn.Module] = []
        chans = stem_channels
        for item in layout or _CIFAR_LAYOUT:
            if item == "pool":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            ch1, r3, ch3, r5, ch5, proj = item
            block = Inception(chans, ch1, ch3, ch5, reduce3x3=r3, reduce5x5=r5, pool_proj=proj,
                              factorized=factorized)
            layers.append(block)
            chans = block.out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(chans, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(self.stem(x))), 1))


@register_model(input_size=32, num_classes=10, tags=("cifar", "compact"))
def googlenet_cifar(num_classes: int = 10, in_chans: int = 3, dropout: float = 0.2,
                    factorized: bool = False):
    """A small GoogLeNet for 32x32: five Inception modules with reductions at half width."""
    return GoogLeNetCifar(num_classes, in_chans, dropout, factorized=factorized)
