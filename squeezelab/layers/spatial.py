"""Cheaper stand-ins for one k x k convolution, each mapping ``in_chans -> out_chans`` at stride 1
with "same" padding, so any of them can take the place of a Fire module's expand3x3.

Weights (no biases) of a k x k conv from c_in to c_out, and of each stand-in:

- ``standard``: one k x k conv, ``k^2 c_in c_out``.
- ``factorized``: Inception-v2/v3's factorisation (Szegedy et al. 2015, arXiv 1512.00567,
  Section 3): asymmetric, a 1 x k conv then a k x 1 conv (Section 3.2), ``k c_in c_mid +
  k c_mid c_out``; or, ``square=True``, a 5 x 5 as two 3 x 3 (a k x k as (k-1)/2 of them,
  Section 3.1), ``9 c_in c_mid + ... + 9 c_mid c_out``. ``c_mid`` defaults to ``c_in``: in a
  Fire module c_in is the small squeeze width, so that is where the saving is. BatchNorm and
  the activation sit between the parts: the paper found the nonlinearity between them better
  than a linear factorisation (Section 3.1).
- ``flattened``: flattened convolutions (Jin et al. 2014, arXiv 1412.5474): each 3-D filter as
  three 1-D filters in sequence, lateral (a 1 x 1 across channels, c_in -> c_out), vertical
  (k x 1) and horizontal (1 x k), the last two per channel: ``c_in c_out + 2 k c_out``. No
  nonlinearity inside, as in the paper; the biases of the first two are left out (they pass
  linearly into the last one).
- ``separable``: a depthwise-separable conv (Xception, Chollet 2017, arXiv 1610.02357): a k x k
  depthwise conv per input channel, then a 1 x 1 pointwise conv: ``k^2 c_in + c_in c_out``. No
  nonlinearity between the two (Xception Section 4.7: better without).

Every stand-in ends in a plain conv with ``out_channels`` set and no BatchNorm or activation
after it: the caller adds those (a Fire module keeps its ``expand3x3_bn`` and
``expand3x3_activation``), so a standard expand3x3 keeps torchvision's keys.
"""
from __future__ import annotations

import torch.nn as nn

from squeezelab.layers.conv import ConvBnAct

#: the kinds of k x k convolution ``spatial_conv`` builds (a Fire module's ``expand3x3``)
SPATIAL_KINDS = ("standard", "factorized", "flattened", "separable")


def _odd_kernel(kernel_size: int) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int (a 'same'-padded k x k "
                         f"conv), got {kernel_size!r}")


class FactorizedConv(nn.Sequential):
    """Inception-v2's factorised k x k conv: ``conv1`` (1 x k, or 3 x 3 when ``square``) with
    BatchNorm and activation, then ``conv2`` (k x 1, or the last 3 x 3) to ``out_chans``.

    ``square=True`` factorises a k x k (k = 5, 7, ...) into (k-1)/2 stacked 3 x 3 convs,
    ``conv1`` ... ``conv<n>``, which see the same k x k window. ``bias`` is the last conv's
    (False when a BatchNorm follows it)."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 3,
                 mid_chans: int | None = None, square: bool = False, bias: bool = True,
                 batch_norm: bool = False, activation: str = "relu"):
        _odd_kernel(kernel_size)
        mid = in_chans if mid_chans is None else mid_chans
        super().__init__()
        if square:
            if kernel_size < 5:
                raise ValueError(f"a square factorisation replaces a k x k (k >= 5) by 3 x 3 "
                                 f"convs, got kernel_size {kernel_size}")
            steps = (kernel_size - 1) // 2  # each 3 x 3 widens the window by 2
            chans = in_chans
            for i in range(steps - 1):
                self.add_module(f"conv{i + 1}", ConvBnAct(chans, mid, 3, batch_norm=batch_norm,
                                                          activation=activation))
                chans = mid
            self.add_module(f"conv{steps}", nn.Conv2d(chans, out_chans, 3, padding=1,
                                                      bias=bias))
        else:
            if kernel_size < 3:
                raise ValueError(f"an asymmetric factorisation needs kernel_size >= 3, got "
                                 f"{kernel_size}")
            pad = kernel_size // 2
            self.conv1 = ConvBnAct(in_chans, mid, (1, kernel_size), batch_norm=batch_norm,
                                   activation=activation)
            self.conv2 = nn.Conv2d(mid, out_chans, (kernel_size, 1), padding=(pad, 0),
                                   bias=bias)
        self.out_channels = out_chans


class FlattenedConv(nn.Sequential):
    """A flattened k x k conv: ``lateral`` 1 x 1 (in -> out), then ``vertical`` k x 1 and
    ``horizontal`` 1 x k per channel (depthwise), no nonlinearity in between."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 3, bias: bool = True):
        _odd_kernel(kernel_size)
        pad = kernel_size // 2
        super().__init__()
        self.lateral = nn.Conv2d(in_chans, out_chans, 1, bias=False)
        self.vertical = nn.Conv2d(out_chans, out_chans, (kernel_size, 1), padding=(pad, 0),
                                  groups=out_chans, bias=False)
        self.horizontal = nn.Conv2d(out_chans, out_chans, (1, kernel_size), padding=(0, pad),
                                    groups=out_chans, bias=bias)
        self.out_channels = out_chans


class SeparableConv(nn.Sequential):
    """A depthwise-separable k x k conv: ``depthwise`` (k x k, one filter per input channel,
    ``stride``) then ``pointwise`` (1 x 1, in -> out), no nonlinearity in between."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 3, stride: int = 1,
                 bias: bool = True):
        _odd_kernel(kernel_size)
        super().__init__()
        self.depthwise = nn.Conv2d(in_chans, in_chans, kernel_size, stride,
                                   padding=kernel_size // 2, groups=in_chans, bias=False)
        self.pointwise = nn.Conv2d(in_chans, out_chans, 1, bias=bias)
        self.out_channels = out_chans


def spatial_conv(kind: str, in_chans: int, out_chans: int, kernel_size: int = 3, *,
                 bias: bool = True, batch_norm: bool = False,
                 activation: str = "relu") -> nn.Module:
    """A k x k conv of the given ``kind`` (one of ``SPATIAL_KINDS``), in -> out channels, stride
    1, "same" padding. ``bias`` is the last conv's; ``batch_norm`` and ``activation`` are used
    only inside a factorised conv (between its parts)."""
    if kind == "standard":
        _odd_kernel(kernel_size)
        return nn.Conv2d(in_chans, out_chans, kernel_size, padding=kernel_size // 2, bias=bias)
    if kind == "factorized":
        return FactorizedConv(in_chans, out_chans, kernel_size, bias=bias,
                              batch_norm=batch_norm, activation=activation)
    if kind == "flattened":
        return FlattenedConv(in_chans, out_chans, kernel_size, bias=bias)
    if kind == "separable":
        return SeparableConv(in_chans, out_chans, kernel_size, bias=bias)
    raise ValueError(f"the kind of k x k conv must be one of {SPATIAL_KINDS}, got {kind!r}")


__all__ = ["SPATIAL_KINDS", "FactorizedConv", "FlattenedConv", "SeparableConv", "spatial_conv"]
