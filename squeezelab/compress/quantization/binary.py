"""Binary weights and binary inputs: BinaryConnect (Courbariaux et al. 2015, arXiv 1511.00363)
and XNOR-Net (Rastegari et al. 2016, arXiv 1603.05279).

* ``binaryconnect``: the forward uses w_b = sign(w) (sign(0) = +1); the backward passes the
  gradient straight through where |w| <= 1; the real-valued shadow weights are clipped to
  [-1, 1] after every optimizer step (``clip_binary_weights_`` or ``BinaryClipHook``).
* ``xnor`` (the paper's Binary-Weight-Network): W ~ alpha * sign(W), alpha = mean |W| per
  output filter (the optimal scale of section 3.1).
* ``xnor_net``: binary weights and binary inputs. I ~ beta * sign(I) with beta varying over
  space: A = mean over channels of |I|, K = A convolved with a (k x k) box filter of 1/(k*k)
  (stride, padding and dilation of the layer), and I * W ~ (sign(I) conv sign(W)) . K . alpha
  (section 3.2). For a Linear layer K is mean |x| over the features of each sample.

Gradients flow through alpha as well as through the sign estimator, as in the paper's
equation for dC/dW. ``binarize_`` keeps the first and last layers real by default, as both
papers do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.compress.quantization.select import (
    LayerSelection,
    select_layers,
    set_module,
)
from squeezelab.compress.quantization.ste import binary_sign, sign_ste
from squeezelab.hooks import TrainHook, TrainState

METHODS = ("binaryconnect", "xnor", "xnor_net")


# --------------------------------------------------------------------------- pure functions


def xnor_alpha(weight: torch.Tensor) -> torch.Tensor:
    """alpha = mean |W| over everything but the output dimension: (out, ...) -> (out,)."""
    return weight.abs().reshape(weight.shape[0], -1).mean(dim=1)


def binarize_weight(weight: torch.Tensor, method: str) -> torch.Tensor:
    """The weight a binary layer computes with, differentiable through the STE.

    ``binaryconnect``: sign(w). ``xnor`` / ``xnor_net``: alpha[out] * sign(w).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    b = sign_ste(weight)
    if method == "binaryconnect":
        return b
    shape = (-1,) + (1,) * (weight.dim() - 1)  # (out,) -> (out, 1, 1, 1) for conv weights
    return xnor_alpha(weight).reshape(shape) * b


def binary_input_scale(
    x: torch.Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> torch.Tensor:
    """XNOR-Net's K map: (N, C, H, W) -> (N, groups, H', W').

    A = mean over the channels of each group of |x|; K = A convolved with a box filter of
    1/(kh*kw) using the layer's own stride, padding and dilation, so K[n, g, i, j] is the mean
    |x| over the window that produces output pixel (i, j).
    """
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"channels {c} are not divisible by groups {groups}")
    a = x.abs().reshape(n, groups, c // groups, h, w).mean(dim=2)  # (N, G, H, W)
    kh, kw = kernel_size
    box = x.new_full((groups, 1, kh, kw), 1.0 / (kh * kw))
    return F.conv2d(a, box, None, stride, padding, dilation, groups)


def xnor_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> torch.Tensor:
    """XNOR-Net convolution: (conv(sign(x), sign(W)) * K * alpha) + bias.

    Zero padding is applied after the sign, so padded positions contribute 0 as in a real
    binary convolution with a zero border. The sign of ``x`` uses the STE (gradient where
    |x| <= 1), alpha and K keep their exact gradients.
    """
    kernel_size = weight.shape[2:]
    k = binary_input_scale(x, kernel_size, stride, padding, dilation, groups)  # (N, G, H', W')
    out = F.conv2d(sign_ste(x), sign_ste(weight), None, stride, padding, dilation, groups)
    out_per_group = weight.shape[0] // groups
    k = k.repeat_interleave(out_per_group, dim=1)  # (N, G, H', W') -> (N, out, H', W')
    out = out * k * xnor_alpha(weight).reshape(1, -1, 1, 1)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def xnor_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """XNOR-Net fully connected layer: (sign(x) @ sign(W)^T) * mean|x| * alpha + bias."""
    k = x.abs().mean(dim=-1, keepdim=True)  # (..., 1): the K of a 1x1 "kernel" over all features
    out = F.linear(sign_ste(x), sign_ste(weight)) * k * xnor_alpha(weight)
    return out if bias is None else out + bias


# --------------------------------------------------------------------------- config and modules


@dataclass(kw_only=True)
class BinaryConfig(LayerSelection):
    """``method``: "binaryconnect" | "xnor" | "xnor_net". ``clip_weights``: clip the real-valued
    weights to [-1, 1] after each step (BinaryConnect's rule; ``None`` = on for binaryconnect
    only). The first and last Conv2d/Linear stay real-valued unless ``keep_first_last=False``."""

    method: str = "xnor"
    keep_first_last: bool = True
    clip_weights: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.clip_weights is None:
            self.clip_weights = self.method == "binaryconnect"


class _BinaryMixin:
    def _init_binary(self, config: BinaryConfig) -> None:
        self.method = config.method
        self.clip_weights = bool(config.clip_weights)

    def binary_weight(self) -> torch.Tensor:
        """The weight used in the forward (sign, or alpha * sign)."""
        return binarize_weight(self.weight, self.method)

    def size_bits(self) -> int:
        """Storage of the binarized layer: 1 bit per weight, 32 per alpha (xnor*), 32 per bias."""
        alpha_bits = 0 if self.method == "binaryconnect" else 32 * self.weight.shape[0]
        bias_bits = 0 if self.bias is None else 32 * self.bias.numel()
        return self.weight.numel() + alpha_bits + bias_bits

    def extra_repr(self) -> str:
        return super().extra_repr() + f", method={self.method}"


class BinaryConv2d(_BinaryMixin, nn.Conv2d):
    """Conv2d with real-valued shadow weights (Parameters) binarized in the forward."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, config: BinaryConfig) -> BinaryConv2d:
        if config.method == "xnor_net" and conv.padding_mode != "zeros":
            raise ValueError(f"xnor_net needs zero padding, got padding_mode={conv.padding_mode!r}")
        b = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta")
        b.weight, b.bias = conv.weight, conv.bias  # the same Parameters: optimizers keep working
        b._init_binary(config)
        return b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "xnor_net":
            return xnor_conv2d(x, self.weight, self.bias, self.stride, self.padding,
                               self.dilation, self.groups)
        return self._conv_forward(x, self.binary_weight(), self.bias)


class BinaryLinear(_BinaryMixin, nn.Linear):
    """Linear with real-valued shadow weights (Parameters) binarized in the forward."""

    @classmethod
    def from_float(cls, linear: nn.Linear, config: BinaryConfig) -> BinaryLinear:
        b = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        b.weight, b.bias = linear.weight, linear.bias
        b._init_binary(config)
        return b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "xnor_net":
            return xnor_linear(x, self.weight, self.bias)
        return F.linear(x, self.binary_weight(), self.bias)


def binarize_(model: nn.Module, config: BinaryConfig) -> dict[str, dict[str, Any]]:
    """Replace the selected Conv2d/Linear by BinaryConv2d/BinaryLinear in place (sharing their
    weight Parameters). Returns per layer: method, ``size_bits`` and ``fp32_bits``."""
    chosen = select_layers(model, config)
    report = {}
    for name, module in chosen:
        if isinstance(module, _BinaryMixin):
            raise ValueError(f"layer {name!r} is already binarized")
        cls = BinaryConv2d if isinstance(module, nn.Conv2d) else BinaryLinear
        b = cls.from_float(module, config)
        set_module(model, name, b)
        fp32_bits = 32 * sum(p.numel() for p in module.parameters(recurse=False))
        report[name] = {"method": config.method, "size_bits": b.size_bits(), "fp32_bits": fp32_bits}
    return report


@torch.no_grad()
def clip_binary_weights_(model: nn.Module, bound: float = 1.0) -> int:
    """Clip the shadow weights of every binary layer with ``clip_weights`` to [-bound, bound]
    (BinaryConnect, algorithm 1: otherwise the real weights grow without affecting sign(w)).
    Returns the number of layers clipped."""
    if not bound > 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    count = 0
    for m in model.modules():
        if isinstance(m, _BinaryMixin) and m.clip_weights:
            m.weight.clamp_(-bound, bound)
            count += 1
    return count


class BinaryClipHook(TrainHook):
    """Training hook: ``clip_binary_weights_`` after every optimizer step."""

    name = "binary_clip"

    def __init__(self, bound: float = 1.0):
        if not bound > 0:
            raise ValueError(f"bound must be > 0, got {bound}")
        self.bound = bound

    def on_train_start(self, state: TrainState) -> None:
        clip_binary_weights_(state.model, self.bound)

    def after_step(self, state: TrainState) -> None:
        clip_binary_weights_(state.model, self.bound)

    def describe(self) -> str:
        return f"{self.name} (bound {self.bound:g})"


__all__ = [
    "BinaryClipHook", "BinaryConfig", "BinaryConv2d", "BinaryLinear", "METHODS", "binarize_",
    "binarize_weight", "binary_input_scale", "binary_sign", "clip_binary_weights_", "xnor_alpha",
    "xnor_conv2d", "xnor_linear",
]
