"""The Fire module of SqueezeNet (Iandola et al. 2016, arXiv 1602.07360).

A 1x1 ``squeeze`` conv feeds two parallel ``expand`` convs (1x1 and 3x3) whose outputs are
concatenated along channels: out = [expand1x1 | expand3x3]. Attribute names match torchvision's
``Fire`` (squeeze, squeeze_activation, expand1x1, ...), so its state-dict keys load unchanged.
Optional parts add keys only when enabled: BatchNorm after each conv (``*_bn``) and a bypass:
``"simple"`` adds the input (needs in == out channels), ``"complex"`` adds a 1x1 conv of it.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from squeezelab.layers.activations import make_activation

BYPASS_KINDS = ("none", "simple", "complex")


class Fire(nn.Module):
    def __init__(
        self,
        inplanes: int,
        squeeze_planes: int,
        expand1x1_planes: int,
        expand3x3_planes: int,
        batch_norm: bool = False,
        activation: str = "relu",
        bypass: str = "none",
    ):
        super().__init__()
        if bypass not in BYPASS_KINDS:
            raise ValueError(f"bypass must be one of {BYPASS_KINDS}, got {bypass!r}")
        out_planes = expand1x1_planes + expand3x3_planes
        if bypass == "simple" and inplanes != out_planes:
            raise ValueError(
                f"a simple bypass needs equal input and output channels, got {inplanes} -> "
                f"{out_planes}; use bypass='complex' for a 1x1-conv bypass"
            )
        self.inplanes = inplanes
        self.bypass_kind = bypass
        bias = not batch_norm  # a conv followed by BatchNorm needs no bias of its own
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1, bias=bias)
        self.squeeze_bn = nn.BatchNorm2d(squeeze_planes) if batch_norm else nn.Identity()
        self.squeeze_activation = make_activation(activation)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1, bias=bias)
        self.expand1x1_bn = nn.BatchNorm2d(expand1x1_planes) if batch_norm else nn.Identity()
        self.expand1x1_activation = make_activation(activation)
        self.expand3x3 = nn.Conv2d(
            squeeze_planes, expand3x3_planes, kernel_size=3, padding=1, bias=bias
        )
        self.expand3x3_bn = nn.BatchNorm2d(expand3x3_planes) if batch_norm else nn.Identity()
        self.expand3x3_activation = make_activation(activation)
        if bypass == "complex" and inplanes != out_planes:
            self.bypass = nn.Conv2d(inplanes, out_planes, kernel_size=1, bias=True)
        elif bypass != "none":
            self.bypass = nn.Identity()
        else:
            self.bypass = None

    @property
    def out_channels(self) -> int:
        return self.expand1x1.out_channels + self.expand3x3.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_activation(self.squeeze_bn(self.squeeze(x)))
        out = torch.cat(
            [
                self.expand1x1_activation(self.expand1x1_bn(self.expand1x1(s))),
                self.expand3x3_activation(self.expand3x3_bn(self.expand3x3(s))),
            ],
            1,
        )
        if self.bypass is not None:
            out = out + self.bypass(x)
        return out
