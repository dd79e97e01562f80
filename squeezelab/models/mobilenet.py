"""MobileNetV1 (Howard et al. 2017, arXiv 1704.04861): depthwise separable convs with a width
multiplier. ``mobilenet_v1`` is the ImageNet network (4,231,976 parameters at width 1.0 and 1000
classes); ``mobilenet_v1_cifar`` keeps stride 1 in the stem and the first block for 32x32 input.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from squeezelab.layers import ConvBnAct
from squeezelab.models.registry import register_model

# (output channels, stride) of the 13 depthwise separable blocks of the paper's Table 1.
_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [
    (1024, 2), (1024, 1)]


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU."""

    def __init__(self, in_chans: int, out_chans: int, stride: int):
        super().__init__()
        self.depthwise = ConvBnAct(in_chans, in_chans, 3, stride, groups=in_chans)
        self.pointwise = ConvBnAct(in_chans, out_chans, 1)


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int, in_chans: int, dropout: float, width_mult: float,
                 stem_stride: int, block_strides: list[int] | None = None):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")

        def width(c: int) -> int:
            return max(8, int(c * width_mult))

        stem = width(32)
        layers: list[nn.Module] = [ConvBnAct(in_chans, stem, 3, stem_stride)]
        channels = stem
        strides = block_strides or [s for _, s in _BLOCKS]
        for (out, _), stride in zip(_BLOCKS, strides):
            layers.append(DepthwiseSeparable(channels, width(out), stride))
            channels = width(out)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model(input_size=224, tags=("baseline",))
def mobilenet_v1(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.0,
                 width_mult: float = 1.0):
    """MobileNetV1 with width multiplier: 4,231,976 parameters at width 1.0, 1000 classes."""
    return MobileNetV1(num_classes, in_chans, dropout, width_mult, stem_stride=2)


@register_model(input_size=32, num_classes=10, tags=("cifar", "baseline"))
def mobilenet_v1_cifar(num_classes: int = 10, in_chans: int = 3, dropout: float = 0.0,
                       width_mult: float = 1.0):
    """MobileNetV1 for 32x32 input: stem stride 1 and the first strided block at stride 1."""
    strides = [s for _, s in _BLOCKS]
    strides[1] = 1  # keep 16x16 maps after block 4 rather than 8x8 for 32x32 input
    return MobileNetV1(num_classes, in_chans, dropout, width_mult, stem_stride=1,
                       block_strides=strides)
