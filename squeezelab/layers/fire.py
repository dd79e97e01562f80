"""The Fire module of SqueezeNet (Iandola et al. 2016, arXiv 1602.07360).

A 1x1 ``squeeze`` conv feeds two parallel ``expand`` convs (1x1 and 3x3) whose outputs are
concatenated along channels: out = [expand1x1 | expand3x3]. Attribute names match torchvision's
``Fire`` (squeeze, squeeze_activation, expand1x1, ...), so its state-dict keys load unchanged.
Optional parts add keys only when enabled: BatchNorm after each conv (``*_bn``) and a bypass:
``"simple"`` adds the input (needs in == out channels), ``"complex"`` adds a 1x1 conv of it.

``expand3x3`` chooses what the 3x3 expand branch is (``layers/spatial.py``): ``"standard"``
(one 3x3 conv, torchvision's keys), ``"factorized"`` (Inception-v2: 1x3 then 3x1),
``"flattened"`` (lateral, vertical, horizontal 1-D filters) or ``"separable"`` (depthwise 3x3
then pointwise); its ``expand3x3_bn`` and activation follow it whichever it is.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from squeezelab.layers.activations import make_activation
from squeezelab.layers.spatial import SPATIAL_KINDS, spatial_conv

BYPASS_KINDS = ("none", "simple", "complex")
#: what a Fire module's 3x3 expand branch may be
EXPAND3X3_KINDS = SPATIAL_KINDS


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
        expand3x3: str = "standard",
    ):
        super().__init__()
        if bypass not in BYPASS_KINDS:
            raise ValueError(f"bypass must be one of {BYPASS_KINDS}, got {bypass!r}")
        if expand3x3 not in EXPAND3X3_KINDS:
            raise ValueError(f"expand3x3 must be one of {EXPAND3X3_KINDS}, got {expand3x3!r}")
        out_planes = expand1x1_planes + expand3x3_planes
        if bypass == "simple" and inplanes != out_planes:
            raise ValueError(
                f"a simple bypass needs equal input and output channels, got {inplanes} -> "
                f"{out_planes}; use bypass='complex' for a 1x1-conv bypass"
            )
        self.inplanes = inplanes
        self.bypass_kind = bypass
        self.expand3x3_kind = expand3x3
        bias = not batch_norm  # a conv followed by BatchNorm needs no bias of its own
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1, bias=bias)
        self.squeeze_bn = nn.BatchNorm2d(squeeze_planes) if batch_norm else nn.Identity()
        self.squeeze_activation = make_activation(activation)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1, bias=bias)
        self.expand1x1_bn = nn.BatchNorm2d(expand1x1_planes) if batch_norm else nn.Identity()
        self.expand1x1_activation = make_activation(activation)
        # "standard" is a plain Conv2d, so torchvision's state-dict keys load unchanged
        self.expand3x3 = spatial_conv(expand3x3, squeeze_planes, expand3x3_planes, 3, bias=bias,
                                      batch_norm=batch_norm, activation=activation)
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
