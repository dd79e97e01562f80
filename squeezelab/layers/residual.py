"""Residual blocks with a narrow and a wide part: ResNet's bottleneck (He et al. 2016, arXiv
1512.03385, Figure 5 right) and MobileNetV2's inverted residual (Sandler et al. 2018, arXiv
1801.04381, Figure 3(b) and Table 1).

A bottleneck is narrow inside: 1x1 reduce (in -> mid), 3x3 (mid -> mid, the stride), 1x1
expand (mid -> mid * expansion), added to the shortcut (the input, or a strided 1x1 conv +
BatchNorm where the shapes differ), then the activation.

An inverted residual is wide inside: 1x1 expand by ``expand_ratio`` t (in -> t*in), 3x3
depthwise (the stride), 1x1 linear projection (t*in -> out, no activation: the paper's linear
bottleneck), added to the input only where stride is 1 and in == out.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from squeezelab.layers.activations import make_activation
from squeezelab.layers.conv import ConvBnAct


class Bottleneck(nn.Module):
    """ResNet bottleneck: ``conv1`` 1x1, ``conv2`` 3x3/``stride`` (the stride on the 3x3, as
    torchvision's ResNet v1.5), ``conv3`` 1x1 to ``mid_chans * expansion`` with no activation,
    ``shortcut`` (Identity or 1x1/``stride`` conv + BatchNorm), then ``act``."""

    def __init__(self, in_chans: int, mid_chans: int, stride: int = 1, expansion: int = 4,
                 activation: str = "relu"):
        super().__init__()
        if min(in_chans, mid_chans, stride, expansion) < 1:
            raise ValueError(f"in_chans, mid_chans, stride and expansion must be >= 1, got "
                             f"{in_chans}, {mid_chans}, {stride}, {expansion}")
        out_chans = mid_chans * expansion
        self.conv1 = ConvBnAct(in_chans, mid_chans, 1, activation=activation)
        self.conv2 = ConvBnAct(mid_chans, mid_chans, 3, stride, activation=activation)
        self.conv3 = ConvBnAct(mid_chans, out_chans, 1, activation=None)
        if stride == 1 and in_chans == out_chans:
            self.shortcut: nn.Module = nn.Identity()
        else:  # projection shortcut (the paper's option B)
            self.shortcut = ConvBnAct(in_chans, out_chans, 1, stride, activation=None)
        self.act = make_activation(activation)
        self.out_channels = out_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: ``conv`` = [``expand`` 1x1 (left out when t = 1)], ``depthwise``
    3x3/``stride``, ``project`` 1x1 (linear); the input is added when ``use_residual``
    (stride 1 and in == out)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1, expand_ratio: int = 6,
                 activation: str = "relu6"):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if not isinstance(expand_ratio, int) or expand_ratio < 1:
            raise ValueError(f"expand_ratio must be an int >= 1, got {expand_ratio!r}")
        hidden = in_chans * expand_ratio
        layers: dict[str, nn.Module] = {}
        if expand_ratio != 1:  # t = 1: the first block of the paper's Table 2 has no expansion
            layers["expand"] = ConvBnAct(in_chans, hidden, 1, activation=activation)
        layers["depthwise"] = ConvBnAct(hidden, hidden, 3, stride, groups=hidden,
                                        activation=activation)
        layers["project"] = ConvBnAct(hidden, out_chans, 1, activation=None)
        self.conv = nn.Sequential()
        for name, layer in layers.items():
            self.conv.add_module(name, layer)
        self.use_residual = stride == 1 and in_chans == out_chans
        self.out_channels = out_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


__all__ = ["Bottleneck", "InvertedResidual"]
