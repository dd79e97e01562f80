"""Conv -> optional BatchNorm -> activation, the stem and baseline building block."""
from __future__ import annotations

import torch.nn as nn

from squeezelab.layers.activations import make_activation


class ConvBnAct(nn.Sequential):
    """``conv`` (bias only without BN), ``bn`` (BatchNorm2d or Identity), ``act``.

    ``kernel_size`` is a side or (height, width), so the asymmetric 1 x n and n x 1 convs of
    Inception-v2 are ConvBnAct too."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        batch_norm: bool = True,
        activation: str | None = "relu",
    ):
        if padding is None:  # "same" size at stride 1, per dimension (a 1x3 pads (0, 1))
            padding = (kernel_size // 2 if isinstance(kernel_size, int)
                       else tuple(k // 2 for k in kernel_size))
        super().__init__()
        self.conv = nn.Conv2d(
            in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=not batch_norm
        )
        self.bn = nn.BatchNorm2d(out_chans) if batch_norm else nn.Identity()
        self.act = make_activation(activation) if activation else nn.Identity()
