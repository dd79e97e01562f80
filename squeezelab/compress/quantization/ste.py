"""Straight-through estimators (Bengio et al. 2013, arXiv 1308.3432) shared by the quantizers.

A quantizer's forward is piecewise constant, so its true gradient is zero almost everywhere.
The straight-through estimator passes the incoming gradient through unchanged where the input
lies inside the quantizer's range and blocks it outside, where the output saturates:

* ``fake_quant_ste``: uniform affine fake quantization (Jacob et al. 2018, arXiv 1712.05877),
  gradient 1 inside [ (qmin - z) * s, (qmax - z) * s ], 0 outside;
* ``sign_ste``: sign with sign(0) = +1, gradient 1 where |x| <= 1, 0 elsewhere (the "hard tanh"
  estimator of BinaryConnect, arXiv 1511.00363, and BNN, arXiv 1602.02830).
"""
from __future__ import annotations

import torch


def binary_sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, -1 elsewhere (sign(0) = +1, so every weight gets one bit)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """``binary_sign(x)`` forward; gradient passed where |x| <= 1 and zeroed where |x| > 1."""
    return _SignSTE.apply(x)


class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin: int, qmax: int):
        q = torch.round(x / scale) + zero_point
        inside = (q >= qmin) & (q <= qmax)
        ctx.save_for_backward(inside)
        return (q.clamp(qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype), None, None, None, None


def fake_quant_ste(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """Quantize-dequantize ``x`` with broadcastable ``scale``/``zero_point`` and an STE gradient.

    The saturation test is made on the rounded integer, the same comparison the forward clamps
    on, so the gradient is zero exactly where the output is clamped.
    """
    return _FakeQuantSTE.apply(x, scale.to(x.dtype), zero_point.to(x.dtype), int(qmin), int(qmax))


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``torch.round`` forward (half to even), identity gradient."""
    return x + (torch.round(x) - x).detach()


__all__ = ["binary_sign", "fake_quant_ste", "round_ste", "sign_ste"]
