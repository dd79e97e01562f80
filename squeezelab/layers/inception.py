"""The Inception module of GoogLeNet (Szegedy et al. 2014, arXiv 1409.4842, Figure 2) and an
Xception module (Chollet 2017, arXiv 1610.02357, Figure 5), the "extreme" Inception.

An Inception module runs four branches on the same input and concatenates their outputs along
channels: a 1x1 conv, a 3x3 conv, a 5x5 conv and a 3x3 max-pool (stride 1). The naive module
(Figure 2a) applies them to the input as it is; the module with dimension reductions
(Figure 2b) puts a 1x1 conv before the 3x3 and the 5x5 to cut the channels they see, and a
1x1 projection after the pool. ``factorized=True`` gives Inception-v2's module (Szegedy et al.
2015, arXiv 1512.00567, Figure 5): the 5x5 as two 3x3 convs.

An Xception module is a residual stack of depthwise-separable convs: ``reps`` times
activation -> SeparableConv -> BatchNorm, then a 3x3 max-pool when ``stride`` > 1, plus a
shortcut (the input itself when the shapes allow it, else a strided 1x1 conv + BatchNorm).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from squeezelab.layers.activations import make_activation
from squeezelab.layers.conv import ConvBnAct
from squeezelab.layers.spatial import FactorizedConv, SeparableConv


def _positive(**channels: int | None) -> None:
    for name, value in channels.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int (a channel count), got {value!r}")


class Inception(nn.Module):
    """GoogLeNet's Inception module: ``branch1x1``, ``branch3x3``, ``branch5x5`` and
    ``branch_pool``, concatenated in that order.

    ``reduce3x3`` / ``reduce5x5``: the 1x1 reduction before the 3x3 / 5x5 (None: the naive
    module's conv on the input itself). ``pool_proj``: the 1x1 projection after the pool (None:
    the pooled input passes through with its ``in_chans`` channels, as in the naive module).
    ``out_channels`` = ch1x1 + ch3x3 + ch5x5 + (pool_proj or in_chans). Every conv is followed
    by BatchNorm (no conv bias) and the activation, or by a bias and the activation without
    BatchNorm.
    """

    def __init__(self, in_chans: int, ch1x1: int, ch3x3: int, ch5x5: int,
                 reduce3x3: int | None = None, reduce5x5: int | None = None,
                 pool_proj: int | None = None, batch_norm: bool = True,
                 activation: str = "relu", factorized: bool = False):
        super().__init__()
        _positive(in_chans=in_chans, ch1x1=ch1x1, ch3x3=ch3x3, ch5x5=ch5x5,
                  reduce3x3=reduce3x3, reduce5x5=reduce5x5, pool_proj=pool_proj)

        def conv(c_in: int, c_out: int, k: int) -> ConvBnAct:
            return ConvBnAct(c_in, c_out, k, batch_norm=batch_norm, activation=activation)

        def reduced(reduce: int | None, tail: list[nn.Module]) -> nn.Sequential:
            head = [conv(in_chans, reduce, 1)] if reduce is not None else []
            return nn.Sequential(*head, *tail)

        self.branch1x1 = conv(in_chans, ch1x1, 1)
        c3 = in_chans if reduce3x3 is None else reduce3x3
        self.branch3x3 = reduced(reduce3x3, [conv(c3, ch3x3, 3)])
        c5 = in_chans if reduce5x5 is None else reduce5x5
        if factorized:
            # Inception-v2: the 5x5 as two 3x3 convs, the first already at the output width
            # (as torchvision's InceptionA); BatchNorm and activation close the branch
            tail = [FactorizedConv(c5, ch5x5, 5, mid_chans=ch5x5, square=True,
                                   bias=not batch_norm, batch_norm=batch_norm,
                                   activation=activation),
                    nn.BatchNorm2d(ch5x5) if batch_norm else nn.Identity(),
                    make_activation(activation)]
        else:
            tail = [conv(c5, ch5x5, 5)]
        self.branch5x5 = reduced(reduce5x5, tail)
        pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.branch_pool = (nn.Sequential(pool, conv(in_chans, pool_proj, 1))
                            if pool_proj is not None else nn.Sequential(pool))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + (in_chans if pool_proj is None
                                                     else pool_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch5x5(x),
                          self.branch_pool(x)], 1)


class XceptionBlock(nn.Module):
    """An Xception module: ``convs`` (``reps`` x activation -> SeparableConv 3x3 -> BatchNorm,
    the first to ``out_chans``), a 3x3/``stride`` max-pool when ``stride`` > 1, and ``shortcut``
    (Identity when ``in_chans == out_chans`` and stride 1, else a strided 1x1 conv + BatchNorm)
    added to the result. ``first_act=False`` drops the activation before the first separable
    conv (Xception's first entry-flow module, which follows a ReLU already)."""

    def __init__(self, in_chans: int, out_chans: int, reps: int = 2, stride: int = 1,
                 activation: str = "relu", first_act: bool = True):
        super().__init__()
        _positive(in_chans=in_chans, out_chans=out_chans, reps=reps, stride=stride)
        layers: list[nn.Module] = []
        chans = in_chans
        for i in range(reps):
            if i > 0 or first_act:
                act = make_activation(activation)
                if i == 0 and hasattr(act, "inplace"):
                    act.inplace = False  # the shortcut still needs the input as it came
                layers.append(act)
            # no bias: a BatchNorm follows every separable conv
            layers += [SeparableConv(chans, out_chans, 3, bias=False), nn.BatchNorm2d(out_chans)]
            chans = out_chans
        if stride > 1:
            layers.append(nn.MaxPool2d(3, stride=stride, padding=1))
        self.convs = nn.Sequential(*layers)
        if stride == 1 and in_chans == out_chans:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = ConvBnAct(in_chans, out_chans, 1, stride=stride, activation=None)
        self.out_channels = out_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x) + self.shortcut(x)


__all__ = ["Inception", "XceptionBlock"]
