"""Fixed point and dynamic fixed point weights (Courbariaux et al. 2014, "Training deep neural
networks with low precision multiplications", arXiv 1412.7024; Gysel et al. 2016, "Ristretto",
arXiv 1605.06402).

A B-bit fixed point number with f fractional bits is a signed integer q in
[-2^(B-1), 2^(B-1) - 1] standing for q * 2^-f. Plain fixed point uses one f for the whole
network; dynamic fixed point gives each layer its own f, chosen from the layer's own range.

``choose_frac_bits`` picks the largest f for which no value of the tensor saturates, i.e.
max(x) <= (2^(B-1) - 1) * 2^-f and min(x) >= -2^(B-1) * 2^-f. (Ristretto's integer length
ceil(log2 max|x|) + 1 is the same rule without the one-LSB margin on the positive side, so
it may clip a maximum that is an exact power of two by one step; ours never clips.) f may be
negative (large values) or exceed B (small values).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.compress.quantization.select import (
    LayerSelection,
    check_int,
    select_layers,
    set_module,
)
from squeezelab.compress.quantization.ste import fake_quant_ste


def fixed_point_range(total_bits: int) -> tuple[int, int]:
    """Integer range of a signed ``total_bits`` fixed point number."""
    check_int("total_bits", total_bits, 2, 32)
    return -(1 << (total_bits - 1)), (1 << (total_bits - 1)) - 1


def fixed_point_codes(x: torch.Tensor, total_bits: int, frac_bits: int) -> torch.Tensor:
    """The integers q = clamp(round(x * 2^frac_bits)) as int64 (round half to even, saturate)."""
    qmin, qmax = fixed_point_range(total_bits)
    check_int("frac_bits", frac_bits, -64, 64)
    return torch.round(torch.ldexp(x.double(), torch.tensor(frac_bits))).clamp(qmin, qmax).long()


def to_fixed_point(x: torch.Tensor, total_bits: int, frac_bits: int | torch.Tensor) -> torch.Tensor:
    """``x`` rounded to the nearest multiple of 2^-frac_bits and saturated to ``total_bits``
    signed bits, returned in ``x``'s dtype and differentiable by the straight-through estimator
    (gradient 1 where the value does not saturate, 0 where it does). ``frac_bits`` may be a
    0-d integer tensor (as ``frac_bits_tensor`` returns), which avoids a host sync."""
    qmin, qmax = fixed_point_range(total_bits)
    if isinstance(frac_bits, torch.Tensor):
        scale = torch.exp2(-frac_bits.to(device=x.device, dtype=torch.float64)).to(x.dtype)
    else:
        check_int("frac_bits", frac_bits, -64, 64)
        scale = torch.tensor(2.0 ** -frac_bits, dtype=x.dtype, device=x.device)
    return fake_quant_ste(x, scale, torch.zeros((), dtype=x.dtype, device=x.device), qmin, qmax)


def frac_bits_tensor(x: torch.Tensor, total_bits: int) -> torch.Tensor:
    """``choose_frac_bits`` as a 0-d int64 tensor on ``x``'s device, computed without leaving
    the device (no host sync inside a training step)."""
    qmin, qmax = fixed_point_range(total_bits)
    x = x.detach().double()
    hi = x.max().clamp(min=0.0)
    lo = (-x.min()).clamp(min=0.0)
    limits = torch.tensor([qmax, -qmin], dtype=torch.float64, device=x.device)
    values = torch.stack([hi, lo])
    # A zero side puts no constraint on f: give it a huge candidate that min() ignores.
    big = torch.tensor(1 << 20, dtype=torch.float64, device=x.device)
    safe = torch.where(values > 0, values, torch.ones_like(values))
    f = torch.floor(torch.log2(limits / safe))
    # log2 in floating point can be off by one at exact powers of two: step to the exact f.
    f = torch.where(safe * torch.exp2(f) > limits, f - 1, f)
    f = torch.where(safe * torch.exp2(f + 1) <= limits, f + 1, f)
    f = torch.where(values > 0, f, big).min()
    return torch.where(
        f == big, torch.tensor(float(total_bits - 1), dtype=torch.float64, device=x.device), f
    ).long()


def choose_frac_bits(x: torch.Tensor, total_bits: int) -> int:
    """Dynamic fixed point: the largest fractional length with which no entry of ``x``
    saturates (see the module docstring). An all-zero tensor gets ``total_bits - 1``."""
    return int(frac_bits_tensor(x, total_bits))


@dataclass(kw_only=True)
class FixedPointConfig(LayerSelection):
    """``total_bits`` per weight; ``dynamic=True``: one fractional length per layer from its
    range (recomputed every forward while training); ``dynamic=False``: the one ``frac_bits``
    for every layer."""

    total_bits: int = 8
    dynamic: bool = True
    frac_bits: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("total_bits", self.total_bits, 2, 32)
        if self.dynamic and self.frac_bits is not None:
            raise ValueError(f"frac_bits must be None with dynamic=True (chosen per layer), "
                             f"got {self.frac_bits}")
        if not self.dynamic:
            if self.frac_bits is None:
                raise ValueError("static fixed point (dynamic=False) needs frac_bits")
            check_int("frac_bits", self.frac_bits, -64, 64)


class _FixedPointMixin:
    def _init_fixed(self, config: FixedPointConfig) -> None:
        self.total_bits = config.total_bits
        self.dynamic = config.dynamic
        f = (choose_frac_bits(self.weight.detach(), self.total_bits) if self.dynamic
             else config.frac_bits)
        # A buffer so the fractional length in use travels with the state dict.
        self.register_buffer("frac_bits",
                             torch.tensor(f, dtype=torch.int64, device=self.weight.device))

    def fixed_point_weight(self) -> torch.Tensor:
        if self.dynamic and self.training:
            self.frac_bits.copy_(frac_bits_tensor(self.weight, self.total_bits))
        return to_fixed_point(self.weight, self.total_bits, self.frac_bits)

    def extra_repr(self) -> str:
        return (super().extra_repr()
                + f", total_bits={self.total_bits}, frac_bits={int(self.frac_bits)}")


class FixedPointConv2d(_FixedPointMixin, nn.Conv2d):
    """Conv2d with float shadow weights rounded to (dynamic) fixed point in the forward."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, config: FixedPointConfig) -> FixedPointConv2d:
        m = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta")
        m.weight, m.bias = conv.weight, conv.bias
        m._init_fixed(config)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.fixed_point_weight(), self.bias)


class FixedPointLinear(_FixedPointMixin, nn.Linear):
    """Linear with float shadow weights rounded to (dynamic) fixed point in the forward."""

    @classmethod
    def from_float(cls, linear: nn.Linear, config: FixedPointConfig) -> FixedPointLinear:
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        m.weight, m.bias = linear.weight, linear.bias
        m._init_fixed(config)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.fixed_point_weight(), self.bias)


def fixed_point_(model: nn.Module, config: FixedPointConfig) -> dict[str, dict[str, Any]]:
    """Replace the selected Conv2d/Linear by FixedPoint* layers in place (sharing the weight
    Parameters, so the model can go on training). Returns per layer ``total_bits``,
    ``frac_bits`` and the number of saturated weights (0 with dynamic fixed point)."""
    report = {}
    for name, module in select_layers(model, config):
        if isinstance(module, _FixedPointMixin):
            raise ValueError(f"layer {name!r} is already fixed point")
        cls = FixedPointConv2d if isinstance(module, nn.Conv2d) else FixedPointLinear
        m = cls.from_float(module, config)
        set_module(model, name, m)
        f = int(m.frac_bits)
        qmin, qmax = fixed_point_range(config.total_bits)
        raw = torch.round(torch.ldexp(m.weight.detach().double(), torch.tensor(f)))
        report[name] = {"total_bits": config.total_bits, "frac_bits": f,
                        "num_saturated": int(((raw < qmin) | (raw > qmax)).sum())}
    return report


__all__ = [
    "FixedPointConfig", "FixedPointConv2d", "FixedPointLinear", "choose_frac_bits", "fixed_point_",
    "fixed_point_codes", "fixed_point_range", "frac_bits_tensor", "to_fixed_point",
]
