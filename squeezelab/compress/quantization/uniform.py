"""Uniform affine integer quantization (Jacob et al. 2018, "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", arXiv 1712.05877): the arithmetic,
the range observers and the config; the integer layers and post-training transform are
``uniform_ptq``, the quantization-aware layers ``uniform_qat``.

A real value r is represented by an integer q with r = scale * (q - zero_point). Weights are
quantized per output channel (symmetric, int8, zero_point 0 by default); the input activation of
each quantized layer per tensor (asymmetric, uint8), from ranges seen on calibration batches
(post-training) or tracked by a moving average during training (QAT).

* pure functions: ``qrange``, ``tensor_min_max``, ``choose_qparams``, ``quantize_affine``,
  ``dequantize_affine``, ``fake_quantize`` (straight-through gradient);
* observers: ``MinMaxObserver``, ``MovingAverageMinMaxObserver``;
* the config: ``UniformQuantConfig``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from squeezelab.compress.quantization.select import (
    LayerSelection,
    check_int,
)
from squeezelab.compress.quantization.ste import fake_quant_ste

# Smallest scale: the float32 machine epsilon, so an all-zero tensor still gets a usable scale.
_EPS = torch.finfo(torch.float32).eps
OBSERVERS = ("minmax", "moving_average")


# --------------------------------------------------------------------------- pure functions


def qrange(num_bits: int, signed: bool) -> tuple[int, int]:
    """Integer range: signed [-2^(b-1), 2^(b-1) - 1], unsigned [0, 2^b - 1]."""
    check_int("num_bits", num_bits, 2, 16)
    if signed:
        return -(1 << (num_bits - 1)), (1 << (num_bits - 1)) - 1
    return 0, (1 << num_bits) - 1


def int_dtype(num_bits: int, signed: bool) -> torch.dtype:
    """The smallest torch integer dtype holding ``num_bits`` codes."""
    if num_bits <= 8:
        return torch.int8 if signed else torch.uint8
    return torch.int16 if signed and num_bits <= 16 else torch.int32


def along_axis(t: torch.Tensor, ndim: int, axis: int | None) -> torch.Tensor:
    """View a per-channel (C,) tensor so it broadcasts along ``axis`` of an ``ndim`` tensor."""
    if axis is None or t.dim() == 0:
        return t
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


def tensor_min_max(x: torch.Tensor, axis: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of ``x``: scalars, or per index of ``axis`` (shape (x.shape[axis],))."""
    if axis is None:
        return x.min(), x.max()
    axis = axis % x.dim()
    flat = x.movedim(axis, 0).reshape(x.shape[axis], -1)  # (C, everything else)
    return flat.min(dim=1).values, flat.max(dim=1).values


def choose_qparams(
    min_val: torch.Tensor | float,
    max_val: torch.Tensor | float,
    num_bits: int = 8,
    symmetric: bool = False,
    signed: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) mapping [min_val, max_val] onto the integer range, elementwise.

    Pass scalars for per-tensor parameters, or (C,) tensors of per-channel minima and maxima.
    The range is first widened to contain 0, so that real zero (padding, ReLU outputs) is exactly
    representable (the paper's section 2.1). Asymmetric (default unsigned):
    scale = (max - min) / (qmax - qmin), zero_point = qmin - round(min / scale). Symmetric (signed
    only): zero_point = 0, scale = max(|min|, |max|) / qmax, so in-range values use
    [-qmax, qmax] and the code -2^(b-1) is never produced (the int8 weight convention of TFLite).
    ``signed`` defaults to ``symmetric``. zero_point is returned as int32.
    """
    signed = symmetric if signed is None else signed
    if symmetric and not signed:
        raise ValueError("symmetric quantization needs a signed integer range (signed=True)")
    qmin, qmax = qrange(num_bits, signed)
    lo = torch.as_tensor(min_val, dtype=torch.float32)
    hi = torch.as_tensor(max_val, dtype=torch.float32)
    if lo.shape != hi.shape:
        raise ValueError(f"min_val and max_val must have the same shape, "
                         f"got {tuple(lo.shape)} and {tuple(hi.shape)}")
    if not torch.isfinite(lo).all() or not torch.isfinite(hi).all():
        raise ValueError("min_val and max_val must be finite (has the observer seen any data?)")
    if (lo > hi).any():
        raise ValueError(f"min_val must be <= max_val, got min {lo.tolist()} and max {hi.tolist()}")
    return qparams_unchecked(lo, hi, qmin, qmax, symmetric)


def qparams_unchecked(
    lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``choose_qparams`` without the input checks, which cost a host sync per call: the QAT
    forward uses it on ranges that are valid by construction."""
    lo = lo.float().clamp(max=0.0)
    hi = hi.float().clamp(min=0.0)
    if symmetric:
        scale = (torch.maximum(-lo, hi) / qmax).clamp(min=_EPS)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = ((hi - lo) / (qmax - qmin)).clamp(min=_EPS)
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def quantize_affine(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | int,
    num_bits: int = 8,
    signed: bool = True,
    axis: int | None = None,
) -> torch.Tensor:
    """q = clamp(round(x / scale) + zero_point, qmin, qmax) as the smallest integer dtype.

    ``scale``/``zero_point`` are scalars, or (C,) tensors applied along ``axis`` of ``x``.
    Rounding is half to even (``torch.round``).
    """
    qmin, qmax = qrange(num_bits, signed)
    scale = along_axis(torch.as_tensor(scale, dtype=torch.float32, device=x.device), x.dim(), axis)
    zp = along_axis(torch.as_tensor(zero_point, device=x.device).float(), x.dim(), axis)
    q = (torch.round(x.float() / scale) + zp).clamp(qmin, qmax)
    return q.to(int_dtype(num_bits, signed))


def dequantize_affine(
    q: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | int,
    axis: int | None = None,
) -> torch.Tensor:
    """r = scale * (q - zero_point), as float32."""
    scale = along_axis(torch.as_tensor(scale, dtype=torch.float32, device=q.device), q.dim(), axis)
    zp = along_axis(torch.as_tensor(zero_point, device=q.device).float(), q.dim(), axis)
    return (q.float() - zp) * scale


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | int,
    num_bits: int = 8,
    signed: bool = True,
    axis: int | None = None,
) -> torch.Tensor:
    """``dequantize_affine(quantize_affine(x))`` in ``x``'s dtype, differentiable by the
    straight-through estimator: the gradient is passed where x is inside the representable range
    and is zero where the forward saturates."""
    qmin, qmax = qrange(num_bits, signed)
    scale = along_axis(torch.as_tensor(scale, device=x.device), x.dim(), axis)
    zp = along_axis(torch.as_tensor(zero_point, device=x.device), x.dim(), axis)
    return fake_quant_ste(x, scale, zp, qmin, qmax)


# --------------------------------------------------------------------------- observers


class MinMaxObserver(nn.Module):
    """Records the running min and max of every tensor passed through it (returned unchanged).

    ``axis=None`` tracks scalars (per tensor); ``axis=k`` tracks one min/max per index of
    dimension k (per channel). The buffers start at +inf / -inf, so the first batch sets them.
    """

    def __init__(self, axis: int | None = None):
        super().__init__()
        self.axis = axis
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

    @property
    def initialized(self) -> bool:
        return bool(torch.isfinite(self.min_val).all())

    def _batch_min_max(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = tensor_min_max(x.detach().float(), self.axis)
        if self.min_val.shape != lo.shape:  # first per-channel batch: size the buffers
            self.min_val = torch.full_like(lo, float("inf"))
            self.max_val = torch.full_like(hi, float("-inf"))
        return lo, hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self._batch_min_max(x)
        self.min_val = torch.minimum(self.min_val, lo)
        self.max_val = torch.maximum(self.max_val, hi)
        return x

    def qparams(
        self, num_bits: int = 8, symmetric: bool = False, signed: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``choose_qparams`` over the recorded range."""
        return choose_qparams(self.min_val, self.max_val, num_bits, symmetric, signed)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Exponential moving average of per-batch min and max (the paper's section 3.1, used for
    activations during QAT): m <- m + c * (batch - m), the first batch taken as is."""

    def __init__(self, averaging_constant: float = 0.01, axis: int | None = None):
        super().__init__(axis)
        if not 0.0 < averaging_constant <= 1.0:
            raise ValueError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.averaging_constant = averaging_constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self._batch_min_max(x)
        c = self.averaging_constant
        # torch.where instead of an `if initialized` test: no host sync per training step.
        fresh = torch.isinf(self.min_val)
        self.min_val = torch.where(fresh, lo, self.min_val + c * (lo - self.min_val))
        self.max_val = torch.where(fresh, hi, self.max_val + c * (hi - self.max_val))
        return x

    def extra_repr(self) -> str:
        return f"averaging_constant={self.averaging_constant}, axis={self.axis}"


# --------------------------------------------------------------------------- config


@dataclass(kw_only=True)
class UniformQuantConfig(LayerSelection):
    """Uniform affine quantization of Conv2d/Linear layers (weights and their input activations).

    ``num_bits``: weight bits; ``per_channel``: one scale per output channel (else per tensor);
    ``weight_symmetric``: signed with zero_point 0 (else unsigned with a zero point).
    ``activation_num_bits``: bits of each quantized layer's input, ``None`` for weight-only;
    ``activation_symmetric``: signed symmetric inputs (default unsigned asymmetric, as the paper).
    ``observer``: "minmax" or "moving_average" for post-training calibration; QAT always uses the
    moving average with ``averaging_constant``.
    """

    num_bits: int = 8
    per_channel: bool = True
    weight_symmetric: bool = True
    activation_num_bits: int | None = 8
    activation_symmetric: bool = False
    observer: str = "minmax"
    averaging_constant: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("num_bits", self.num_bits, 2, 16)
        if self.activation_num_bits is not None:
            check_int("activation_num_bits", self.activation_num_bits, 2, 16)
        if self.observer not in OBSERVERS:
            raise ValueError(f"observer must be one of {OBSERVERS}, got {self.observer!r}")
        if not 0.0 < self.averaging_constant <= 1.0:
            raise ValueError(f"averaging_constant must be in (0, 1], got {self.averaging_constant}")

    def make_observer(self, moving_average: bool | None = None) -> MinMaxObserver:
        if moving_average is None:
            moving_average = self.observer == "moving_average"
        if moving_average:
            return MovingAverageMinMaxObserver(self.averaging_constant)
        return MinMaxObserver()

    def weight_qparams(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero_point) of ``weight``: (out,) tensors per channel, else scalars."""
        lo, hi = tensor_min_max(weight.detach(), 0 if self.per_channel else None)
        return choose_qparams(lo, hi, self.num_bits, self.weight_symmetric)


__all__ = [
    "MinMaxObserver", "MovingAverageMinMaxObserver", "UniformQuantConfig", "along_axis",
    "choose_qparams", "dequantize_affine", "fake_quantize", "int_dtype", "qparams_unchecked",
    "qrange", "quantize_affine", "tensor_min_max",
]
