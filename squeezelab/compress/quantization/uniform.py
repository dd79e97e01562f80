"""Uniform affine integer quantization, post-training and quantization-aware (Jacob et al. 2018,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference",
arXiv 1712.05877).

A real value r is represented by an integer q with r = scale * (q - zero_point). Weights are
quantized per output channel (symmetric, int8, zero_point 0 by default); the input activation of
each quantized layer per tensor (asymmetric, uint8), from ranges seen on calibration batches
(post-training) or tracked by a moving average during training (QAT).

* pure functions: ``qrange``, ``tensor_min_max``, ``choose_qparams``, ``quantize_affine``,
  ``dequantize_affine``, ``fake_quantize`` (straight-through gradient);
* observers: ``MinMaxObserver``, ``MovingAverageMinMaxObserver``;
* modules: ``QuantizedConv2d`` / ``QuantizedLinear`` hold integer weights and compute with an
  exact integer accumulator (the paper's int32 accumulation, simulated in float64 and rounded,
  since PyTorch has no integer convolution on CPU); ``QATConv2d`` / ``QATLinear`` keep float
  shadow weights as Parameters and fake-quantize weights and inputs in the forward;
* transforms: ``quantize_ptq_``, ``prepare_qat_``, ``convert_qat_``.
"""
from __future__ import annotations

from collections.abc import Iterable
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


def _along(t: torch.Tensor, ndim: int, axis: int | None) -> torch.Tensor:
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
    return _qparams(lo, hi, qmin, qmax, symmetric)


def _qparams(
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
    scale = _along(torch.as_tensor(scale, dtype=torch.float32, device=x.device), x.dim(), axis)
    zp = _along(torch.as_tensor(zero_point, device=x.device).float(), x.dim(), axis)
    q = (torch.round(x.float() / scale) + zp).clamp(qmin, qmax)
    return q.to(int_dtype(num_bits, signed))


def dequantize_affine(
    q: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | int,
    axis: int | None = None,
) -> torch.Tensor:
    """r = scale * (q - zero_point), as float32."""
    scale = _along(torch.as_tensor(scale, dtype=torch.float32, device=q.device), q.dim(), axis)
    zp = _along(torch.as_tensor(zero_point, device=q.device).float(), q.dim(), axis)
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
    scale = _along(torch.as_tensor(scale, device=x.device), x.dim(), axis)
    zp = _along(torch.as_tensor(zero_point, device=x.device), x.dim(), axis)
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


# --------------------------------------------------------------------------- integer modules


class _QuantizedMixin:
    """Integer weights + scales; shared by QuantizedConv2d and QuantizedLinear."""

    def _init_quant(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        config: UniformQuantConfig,
        input_qparams: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        scale, zp = config.weight_qparams(weight)
        axis = 0 if config.per_channel else None
        out_channels = weight.shape[0]
        self.num_bits = config.num_bits
        self.weight_signed = config.weight_symmetric
        self.register_buffer(
            "weight_int",
            quantize_affine(weight.detach(), scale, zp, config.num_bits,
                            config.weight_symmetric, axis),
        )
        # Scales and zero points kept per output channel even when per tensor: one code path.
        self.register_buffer("weight_scale", scale.expand(out_channels).clone().to(weight.device))
        self.register_buffer("weight_zero_point", zp.expand(out_channels).clone().to(weight.device))
        self.activation_num_bits = config.activation_num_bits
        self.activation_signed = config.activation_symmetric
        if self.activation_num_bits is None:
            self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
            return
        if input_qparams is None:
            raise ValueError("input_qparams are needed when activation_num_bits is set")
        in_scale, in_zp = input_qparams
        self.register_buffer("input_scale", in_scale.detach().float().reshape(()).to(weight.device))
        self.register_buffer("input_zero_point",
                             in_zp.detach().to(torch.int32).reshape(()).to(weight.device))
        if bias is None:
            self.register_buffer("bias_int", None)
        else:
            # The bias joins the int32 accumulator: scale s_in * s_w, zero point 0 (section 2.4).
            acc_scale = self.input_scale.double() * self.weight_scale.double()
            b = torch.round(bias.detach().double() / acc_scale).clamp(-(2**31), 2**31 - 1)
            self.register_buffer("bias_int", b.to(torch.int32))

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the integers stand for: (q - zero_point) * scale per channel."""
        return dequantize_affine(self.weight_int, self.weight_scale, self.weight_zero_point, axis=0)

    def size_bytes(self) -> int:
        """Bytes of the integer weights at ``num_bits`` each (rounded up), their scales and zero
        points (4 bytes each) and the bias (4 bytes per entry: fp32 or int32)."""
        weight_bits = self.weight_int.numel() * self.num_bits
        bias = getattr(self, "bias", None) if self.activation_num_bits is None else self.bias_int
        n_bias = 0 if bias is None else bias.numel()
        return (weight_bits + 7) // 8 + 8 * self.weight_scale.numel() + 4 * n_bias

    def _integer_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_num_bits is None:
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return self._op(x, self.dequantized_weight().to(x.dtype), bias)
        q_in = quantize_affine(
            x, self.input_scale, self.input_zero_point, self.activation_num_bits,
            self.activation_signed,
        )
        x_int = q_in.double() - self.input_zero_point.double()
        w_int = self.weight_int.double() - _along(
            self.weight_zero_point.double(), self.weight_int.dim(), 0)
        # Integer products summed in float64 are exact below 2^53; round() removes any error a
        # transform-based convolution algorithm could leave. This is the int32 accumulator.
        acc = self._op(x_int, w_int, None).round()
        if self.bias_int is not None:
            acc = acc + self._out_view(self.bias_int.double())
        out = acc * self._out_view(self.input_scale.double() * self.weight_scale.double())
        return out.to(x.dtype)


class QuantizedConv2d(_QuantizedMixin, nn.Module):
    """A Conv2d whose weights are stored as integers (``weight_int``) with per-channel scales."""

    def __init__(self, conv: nn.Conv2d, config: UniformQuantConfig, input_qparams=None):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(
                f"only zero padding is supported, got padding_mode={conv.padding_mode!r}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self._init_quant(conv.weight, conv.bias, config, input_qparams)

    def _op(self, x, w, b):
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def _out_view(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(1, -1, 1, 1)  # (out,) -> broadcast over (N, out, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._integer_forward(x)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, "
            f"weight_bits={self.num_bits}, activation_bits={self.activation_num_bits}"
        )


class QuantizedLinear(_QuantizedMixin, nn.Module):
    """A Linear whose weights are stored as integers (``weight_int``) with per-channel scales."""

    def __init__(self, linear: nn.Linear, config: UniformQuantConfig, input_qparams=None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._init_quant(linear.weight, linear.bias, config, input_qparams)

    def _op(self, x, w, b):
        return F.linear(x, w, b)

    def _out_view(self, t: torch.Tensor) -> torch.Tensor:
        return t  # (out,) broadcasts over the last dimension of (..., out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._integer_forward(x)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"weight_bits={self.num_bits}, activation_bits={self.activation_num_bits}"
        )


def _quantized_from_float(
    module: nn.Module, config: UniformQuantConfig, input_qparams
) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        return QuantizedConv2d(module, config, input_qparams)
    return QuantizedLinear(module, config, input_qparams)


def _batch_input(batch: Any) -> torch.Tensor:
    """The model input of a calibration batch: a tensor, or the first item of (images, labels)."""
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise ValueError(f"calibration batches must be tensors or (images, labels) pairs, "
                         f"got {type(batch).__name__}")
    return batch


def _layer_report(q: _QuantizedMixin, module: nn.Module) -> dict[str, Any]:
    fp32_bytes = 4 * sum(p.numel() for p in module.parameters(recurse=False))
    report = {"num_bits": q.num_bits, "activation_num_bits": q.activation_num_bits,
              "size_bytes": q.size_bytes(), "fp32_bytes": fp32_bytes}
    if q.activation_num_bits is not None:
        report["input_scale"] = float(q.input_scale)
        report["input_zero_point"] = int(q.input_zero_point)
    return report


@torch.no_grad()
def quantize_ptq_(
    model: nn.Module, config: UniformQuantConfig, calibration_batches: Iterable[Any] = ()
) -> dict[str, dict[str, Any]]:
    """Post-training quantization in place: the selected Conv2d/Linear become Quantized* modules.

    With ``config.activation_num_bits`` set, ``calibration_batches`` (tensors or (images,
    labels) pairs) are run through the model in eval mode while observers record the input range
    of every selected layer; each layer's input scale and zero point come from that range. The
    weights are quantized from their own (per-channel) min/max. Returns, per layer name, the bit
    widths, the input qparams, ``size_bytes`` and ``fp32_bytes``.
    """
    chosen = select_layers(model, config)
    input_qparams: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {
        n: None for n, _ in chosen}
    if config.activation_num_bits is not None:
        observers = {n: config.make_observer().to(next(m.parameters()).device) for n, m in chosen}
        handles = [
            m.register_forward_pre_hook(lambda _m, args, obs=observers[n]: obs(args[0]))
            for n, m in chosen
        ]
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        num_batches = 0
        try:
            for batch in calibration_batches:
                model(_batch_input(batch).to(device))
                num_batches += 1
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        if num_batches == 0:
            raise ValueError("calibration_batches is empty; activation ranges need at least "
                             "one batch (or set activation_num_bits=None for weight-only "
                             "quantization)")
        for n, obs in observers.items():
            if not obs.initialized:
                raise ValueError(f"layer {n!r} saw no input during calibration; "
                                 "is it used in forward()?")
            input_qparams[n] = obs.qparams(config.activation_num_bits, config.activation_symmetric)
    report = {}
    for name, module in chosen:
        q = _quantized_from_float(module, config, input_qparams[name])
        set_module(model, name, q)
        report[name] = _layer_report(q, module)
    return report


# --------------------------------------------------------------------------- QAT


class _QATMixin:
    """Fake quantization of the input (moving-average range) and the weight (current range)."""

    def _init_qat(self, config: UniformQuantConfig) -> None:
        self.qconfig = config
        if config.activation_num_bits is not None:
            self.input_observer = config.make_observer(moving_average=True).to(self.weight.device)
        else:
            self.input_observer = None

    def _fake_quant_input(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.qconfig
        if self.input_observer is None:
            return x
        # Track the range while training; in eval a never-trained layer calibrates on the batch.
        if self.training or not self.input_observer.initialized:
            self.input_observer(x)
        signed = cfg.activation_symmetric
        qmin, qmax = qrange(cfg.activation_num_bits, signed)
        scale, zp = _qparams(self.input_observer.min_val, self.input_observer.max_val,
                             qmin, qmax, signed)
        return fake_quantize(x, scale, zp, cfg.activation_num_bits, signed)

    def fake_quantized_weight(self) -> torch.Tensor:
        """The weight as the integer model will see it, with an STE gradient to ``self.weight``."""
        cfg = self.qconfig
        lo, hi = tensor_min_max(self.weight.detach(), 0 if cfg.per_channel else None)
        qmin, qmax = qrange(cfg.num_bits, cfg.weight_symmetric)
        scale, zp = _qparams(lo, hi, qmin, qmax, cfg.weight_symmetric)
        return fake_quantize(self.weight, scale, zp, cfg.num_bits, cfg.weight_symmetric,
                             0 if cfg.per_channel else None)


class QATConv2d(_QATMixin, nn.Conv2d):
    """Conv2d with float shadow weights (a Parameter) and fake-quantized weights and input."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, config: UniformQuantConfig) -> QATConv2d:
        qat = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                  conv.padding_mode, device="meta")
        # the same Parameters: optimizers keep working
        qat.weight, qat.bias = conv.weight, conv.bias
        qat._init_qat(config)
        return qat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._fake_quant_input(x), self.fake_quantized_weight(),
                                  self.bias)


class QATLinear(_QATMixin, nn.Linear):
    """Linear with float shadow weights (a Parameter) and fake-quantized weights and input."""

    @classmethod
    def from_float(cls, linear: nn.Linear, config: UniformQuantConfig) -> QATLinear:
        qat = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        qat.weight, qat.bias = linear.weight, linear.bias
        qat._init_qat(config)
        return qat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._fake_quant_input(x), self.fake_quantized_weight(), self.bias)


def prepare_qat_(model: nn.Module, config: UniformQuantConfig) -> list[str]:
    """Quantization-aware training in place: the selected Conv2d/Linear become QATConv2d /
    QATLinear sharing the original weight Parameters, so an optimizer over
    ``model.parameters()`` (made before or after) trains the float shadow weights through the
    fake quantizers. Returns the names of the prepared layers."""
    chosen = select_layers(model, config)
    for name, module in chosen:
        if isinstance(module, (QATConv2d, QATLinear)):
            raise ValueError(f"layer {name!r} is already prepared for QAT")
        qat_cls = QATConv2d if isinstance(module, nn.Conv2d) else QATLinear
        set_module(model, name, qat_cls.from_float(module, config))
    return [n for n, _ in chosen]


@torch.no_grad()
def convert_qat_(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Replace every QAT layer by its integer counterpart (weights quantized from the trained
    shadow weights, input qparams from the moving-average range). Returns ``quantize_ptq_``'s
    per-layer report."""
    qat_layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (QATConv2d, QATLinear))]
    if not qat_layers:
        raise ValueError("the model has no QAT layer; call prepare_qat_ first")
    report = {}
    for name, module in qat_layers:
        cfg = module.qconfig
        input_qparams = None
        if module.input_observer is not None:
            if not module.input_observer.initialized:
                raise ValueError(
                    f"layer {name!r} has not observed any input; train or run it first")
            input_qparams = module.input_observer.qparams(cfg.activation_num_bits,
                                                          cfg.activation_symmetric)
        q = _quantized_from_float(module, cfg, input_qparams)  # reads the shadow weights
        set_module(model, name, q)
        report[name] = _layer_report(q, module)
    return report


__all__ = [
    "MinMaxObserver", "MovingAverageMinMaxObserver", "QATConv2d", "QATLinear", "QuantizedConv2d",
    "QuantizedLinear", "UniformQuantConfig", "choose_qparams", "convert_qat_", "dequantize_affine",
    "fake_quantize", "int_dtype", "prepare_qat_", "qrange", "quantize_affine", "quantize_ptq_",
    "tensor_min_max",
]
