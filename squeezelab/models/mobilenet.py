"""MobileNetV1 (Howard et al. 2017, arXiv 1704.04861): depthwise separable convs with a width
multiplier. ``mobilenet_v1`` is the ImageNet network (4,231,976 parameters at width 1.0 and 1000
classes); ``mobilenet_v1_cifar`` keeps stride 1 in the stem and the first block for 32x32 input.

MobileNetV2 (Sandler et al. 2018, arXiv 1801.04381): inverted residuals with linear
bottlenecks (``layers.InvertedResidual``), the paper's Table 2. ``mobilenet_v2_cifar`` keeps
stride 1 in the stem and in the second stage for 32x32 input, so the last stage sees 4x4 maps.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from squeezelab.layers import ConvBnAct, InvertedResidual
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


# (expansion t, output channels c, repeats n, stride s of the first) of the paper's Table 2
_V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1)]


def _make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to a multiple of ``divisor``, never more than 10% below it: the
    reference implementation's channel rounding for width multipliers."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class MobileNetV2(nn.Module):
    """``features``: a 3x3 stem conv (``stem_stride``), the 17 inverted residuals of Table 2
    (their widths times ``width_mult``; ``stage_strides`` overrides each stage's stride), and a
    1x1 conv to 1280 channels (not narrowed below 1.0, as in the paper); then global average
    pooling, dropout and a linear classifier."""

    def __init__(self, num_classes: int, in_chans: int, dropout: float, width_mult: float,
                 stem_stride: int, stage_strides: list[int] | None = None):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        strides = stage_strides or [s for *_, s in _V2_STAGES]
        chans = _make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvBnAct(in_chans, chans, 3, stem_stride,
                                             activation="relu6")]
        for (t, c, n, _), stride in zip(_V2_STAGES, strides):
            out = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(chans, out, stride if i == 0 else 1, t))
                chans = out
        last = _make_divisible(1280 * max(1.0, width_mult))
        layers.append(ConvBnAct(chans, last, 1, activation="relu6"))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model(input_size=32, num_classes=10, tags=("cifar", "compact"))
def mobilenet_v2_cifar(num_classes: int = 10, in_chans: int = 3, dropout: float = 0.2,
                       width_mult: float = 1.0):
    """MobileNetV2 for 32x32 input: stem and second stage at stride 1, width multiplier."""
    strides = [s for *_, s in _V2_STAGES]
    strides[1] = 1  # 32x32 maps through the 24-channel stage rather than 16x16
    return MobileNetV2(num_classes, in_chans, dropout, width_mult, stem_stride=1,
                       stage_strides=strides)
