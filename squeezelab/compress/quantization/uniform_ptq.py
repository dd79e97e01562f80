"""Integer layers and post-training quantization (Jacob et al. 2018, arXiv 1712.05877).

``QuantizedConv2d`` / ``QuantizedLinear`` hold integer weights and compute with an exact integer
accumulator (the paper's int32 accumulation, simulated in float64 and rounded, since PyTorch has
no integer convolution on CPU); ``quantize_ptq_`` swaps them in, with input ranges calibrated on
a few batches.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.compress.quantization.select import select_layers, set_module
from squeezelab.compress.quantization.uniform import (
    UniformQuantConfig,
    along_axis,
    dequantize_affine,
    quantize_affine,
)

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
        w_int = self.weight_int.double() - along_axis(
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


def quantized_from_float(
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


def layer_report(q: _QuantizedMixin, module: nn.Module) -> dict[str, Any]:
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
        q = quantized_from_float(module, config, input_qparams[name])
        set_module(model, name, q)
        report[name] = layer_report(q, module)
    return report

__all__ = ["QuantizedConv2d", "QuantizedLinear", "layer_report", "quantize_ptq_",
           "quantized_from_float"]
