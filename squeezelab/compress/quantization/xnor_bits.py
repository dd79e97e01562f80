"""XNOR-Net layers that run on packed sign bits (Rastegari et al. 2016, arXiv 1603.05279).

``binary.py`` simulates XNOR-Net in float: conv(sign(x), sign(W)) * K * alpha, with the +-1
values stored as float32. This module is the execution form the paper describes: the signs
packed 64 to a machine word, and the dot product of two +-1 vectors of length n computed as

    a . b = (agreements) - (disagreements) = n - 2 * popcount(a_bits XOR b_bits)

(XNOR counts agreements; XOR + popcount counts the disagreements, which is the same thing), one
XOR and one popcount per 64 multiply-accumulates. A bit is 1 where the value is negative
(sign -1) and 0 where it is >= 0 (sign +1, as ``binary_sign`` takes sign(0) = +1).

* The popcount is numpy's ``np.bitwise_count`` (numpy >= 2.0: the CPU's POPCNT). torch has
  bitwise XOR but no popcount: counting bits there means unpacking them (64x the memory) or a
  byte lookup table, both slower than the count itself.
* Padding bits never count. A length-K vector fills ceil(K/64) words; the unused bits of the
  last word are zero in both operands, and ``xnor_popcount_dot`` masks them off the XOR of
  the last word as well, so whatever they hold, n = K is the true length.
* Zero padding of a convolution: the simulation pads sign(x) with 0, which is neither +1 nor
  -1. Here padded positions are packed as +1 (bit 0), so the raw dot at an output position
  that overlaps the border also counts sum(sign(W)) over the padded taps; that sum depends only
  on the weight and the position, so it is computed once per input size (a tiny convolution of
  the padding indicator with the per-tap sums of sign(W)) and subtracted. The result is the
  simulation's integer exactly.
* The scaling is the simulation's, in the same order: the dot (an exact integer) times K
  (``binary_input_scale`` for a conv, mean |x| per sample for a linear layer) times alpha
  (``xnor_alpha``: mean |W| per output channel), plus the bias. The outputs equal
  ``BinaryConv2d``/``BinaryLinear`` with ``method="xnor_net"`` to float rounding.

``pack_xnor_(model)`` swaps every XNOR-Net layer (``method="xnor_net"``) of a ``binarize_``d
model for its packed form: an execution form of the existing ``xnor_net`` quantizer for
inference, so nothing new is registered. The packed layers hold 1 bit per weight (plus alpha
and bias) and compute on the CPU with numpy in one thread; they do not train.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.compress.quantization.binary import (
    BinaryConv2d,
    BinaryLinear,
    binary_input_scale,
    xnor_alpha,
)
from squeezelab.compress.quantization.select import set_module
from squeezelab.models import unwrap_model

WORD_BITS = 64
_BLOCK_BYTES = 1 << 18  # one (rows x out) block of uint64 XORs: 256 KB, about an L2's worth
_SMALL_ROWS = 4  # up to this many input rows: one 3-D pass per chunk (see xnor_popcount_dot)


# --------------------------------------------------------------------------- bits and words


def words_for(n_bits: int) -> int:
    """64-bit words that hold ``n_bits`` bits."""
    return -(-n_bits // WORD_BITS)


def pack_sign_bits(negative: np.ndarray | torch.Tensor) -> np.ndarray:
    """Pack a boolean "is negative" array along its last axis: (..., K) -> (..., ceil(K/64))
    uint64. Element 64 j + i is bit i of word j; the bits after K are 0."""
    if isinstance(negative, torch.Tensor):
        negative = negative.cpu().numpy()
    k = negative.shape[-1]
    packed = np.packbits(negative, axis=-1, bitorder="little")  # (..., ceil(K/8)) uint8
    pad = words_for(k) * 8 - packed.shape[-1]
    if pad:
        packed = np.concatenate(
            [packed, np.zeros(packed.shape[:-1] + (pad,), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)


def sign_bits(x: torch.Tensor) -> np.ndarray:
    """``pack_sign_bits`` of ``x < 0`` over the last dimension (sign(0) = +1: bit 0)."""
    return pack_sign_bits((x.detach() < 0).cpu().numpy())


def tail_mask(n_bits: int) -> np.uint64:
    """The bits of the last word that belong to a length-``n_bits`` vector."""
    used = n_bits - (words_for(n_bits) - 1) * WORD_BITS  # 1..64
    return np.uint64((1 << used) - 1)


def xnor_popcount_dot(a: np.ndarray, b: np.ndarray, n_bits: int) -> np.ndarray:
    """Dot products of +-1 vectors from their packed signs: (M, W) and (N, W) uint64 words ->
    (M, N) int32, ``n_bits - 2 * popcount(a XOR b)`` summed over the W words.

    Bits of the last word beyond ``n_bits`` are masked off the XOR, so they never count.
    Two loops, the faster of the ones timed on this project's CPU for each case: for a few rows
    (batch-1 linear layers), one XOR over a (rows, N, words) block and a sum over the words;
    otherwise blocks of rows small enough to stay in cache, looping over the words and adding
    the popcounts of each word's (rows, N) XOR into a uint16 (or int32) accumulator.
    """
    if a.dtype != np.uint64 or b.dtype != np.uint64 or a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"xnor_popcount_dot needs two 2-D uint64 word arrays, got {a.dtype} "
                         f"{a.shape} and {b.dtype} {b.shape}")
    (m, w), n = a.shape, b.shape[0]
    if b.shape[1] != w or w != words_for(n_bits):
        raise ValueError(f"{n_bits} bits take {words_for(n_bits)} words, got {a.shape[1]} "
                         f"and {b.shape[1]}")
    mask = tail_mask(n_bits)
    counts = np.empty((m, n), np.int32)
    if m <= _SMALL_ROWS:
        words_per_chunk = max(1, _BLOCK_BYTES * 4 // (max(m, 1) * n * 8))
        counts[...] = 0
        for w0 in range(0, w, words_per_chunk):
            w1 = w0 + words_per_chunk
            x = np.bitwise_xor(a[:, None, w0:w1], b[None, :, w0:w1])  # (M, N, words)
            if w1 >= w:
                x[..., -1] &= mask
            counts += np.bitwise_count(x).sum(axis=-1, dtype=np.int32)
    else:
        at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)  # (W, M), (W, N)
        rows = max(1, min(m, _BLOCK_BYTES // (n * 8)))
        acc_type = np.uint16 if n_bits < 1 << 16 else np.int32
        xor = np.empty((rows, n), np.uint64)
        ones = np.empty((rows, n), np.uint8)
        acc = np.empty((rows, n), acc_type)
        for start in range(0, m, rows):
            stop = min(m, start + rows)
            x, c, s = xor[:stop - start], ones[:stop - start], acc[:stop - start]
            s[...] = 0
            for j in range(w):
                np.bitwise_xor(at[j, start:stop, None], bt[j, None, :], out=x)
                if j == w - 1:
                    np.bitwise_and(x, mask, out=x)
                np.bitwise_count(x, out=c)
                np.add(s, c, out=s)
            counts[start:stop] = s
    return n_bits - 2 * counts


# --------------------------------------------------------------------------- layers


def _words_tensor(words: np.ndarray) -> torch.Tensor:
    """uint64 words as an int64 tensor (a bit-for-bit view), storable in a state dict."""
    return torch.from_numpy(np.ascontiguousarray(words).view(np.int64).copy())


def _words_array(t: torch.Tensor) -> np.ndarray:
    return t.numpy().view(np.uint64)


def _check_cpu(x: torch.Tensor, layer: nn.Module) -> None:
    if x.device.type != "cpu":
        raise ValueError(f"{type(layer).__name__} computes with numpy on the CPU; got an input "
                         f"on {x.device}")


def _check_xnor_net(layer: nn.Module, kind: type) -> None:
    if not isinstance(layer, kind) or layer.method != "xnor_net":
        got = (f"a {type(layer).__name__} with method={layer.method!r}"
               if hasattr(layer, "method") else f"a {type(layer).__name__}")
        raise ValueError(f"packing needs a {kind.__name__} with method='xnor_net' (binary "
                         f"weights and inputs), got {got}")


class PackedXnorLinear(nn.Module):
    """XNOR-Net fully connected layer on packed bits, made from a ``BinaryLinear``
    (``method="xnor_net"``). Buffers: ``weight_bits`` (out, words) int64 holding the uint64
    sign words, ``alpha`` (out,), ``bias`` (out,) or None."""

    def __init__(self, in_features: int, out_features: int, weight_bits: torch.Tensor,
                 alpha: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_bits", weight_bits)
        self.register_buffer("alpha", alpha)
        self.register_buffer("bias", bias)

    @classmethod
    @torch.no_grad()
    def from_binary(cls, layer: BinaryLinear) -> PackedXnorLinear:
        _check_xnor_net(layer, BinaryLinear)
        w = layer.weight.detach()
        bias = None if layer.bias is None else layer.bias.detach().clone()
        return cls(layer.in_features, layer.out_features, _words_tensor(sign_bits(w)),
                   xnor_alpha(w).clone(), bias)

    @torch.no_grad()
    def sign_dot(self, x: torch.Tensor) -> torch.Tensor:
        """sign(x) . sign(W) for every row of ``x`` (..., in) -> (..., out) int32, exactly."""
        _check_cpu(x, self)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, the layer expects "
                             f"{self.in_features}")
        rows = sign_bits(x.reshape(-1, self.in_features))
        dot = xnor_popcount_dot(rows, _words_array(self.weight_bits), self.in_features)
        return torch.from_numpy(dot).reshape(*x.shape[:-1], self.out_features)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.abs().mean(dim=-1, keepdim=True)  # as xnor_linear: mean |x| per sample
        out = self.sign_dot(x).to(x.dtype)  # exact integers; then in place, in xnor_linear's
        out.mul_(k).mul_(self.alpha.to(x.dtype))  # order: (dot * K) * alpha + bias
        return out if self.bias is None else out.add_(self.bias)

    def size_bits(self) -> int:
        """Storage: the sign words (tail bits included), 32 per alpha and per bias."""
        return (self.weight_bits.numel() * WORD_BITS + 32 * self.alpha.numel()
                + (0 if self.bias is None else 32 * self.bias.numel()))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, words={self.weight_bits.shape[1]}")


class PackedXnorConv2d(nn.Module):
    """XNOR-Net convolution on packed bits, made from a ``BinaryConv2d`` (``method="xnor_net"``,
    any stride, padding, dilation, groups). The input's signs are cut into patches (im2col,
    ordered (channel, kh, kw) like the weight), packed, and dotted with the weight words.

    Buffers: ``weight_bits`` (groups, out/groups, words) int64 holding uint64 sign words,
    ``tap_sums`` (out, 1, kh, kw): sum over each filter's input channels of sign(W) (the zero-
    padding correction), ``alpha`` (out,), ``bias`` (out,) or None.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int] | str,
                 dilation: tuple[int, int], groups: int, pad4: tuple[int, int, int, int],
                 weight_bits: torch.Tensor, tap_sums: torch.Tensor, alpha: torch.Tensor,
                 bias: torch.Tensor | None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.groups = dilation, groups
        self.pad4 = pad4  # (left, right, top, bottom), as F.pad takes it
        self.register_buffer("weight_bits", weight_bits)
        self.register_buffer("tap_sums", tap_sums)
        self.register_buffer("alpha", alpha)
        self.register_buffer("bias", bias)
        self._correction: tuple[tuple[Any, ...], np.ndarray] | None = None

    @classmethod
    @torch.no_grad()
    def from_binary(cls, layer: BinaryConv2d) -> PackedXnorConv2d:
        _check_xnor_net(layer, BinaryConv2d)
        w = layer.weight.detach()
        out, per_group = w.shape[0], w.shape[0] // layer.groups
        flat = w.reshape(layer.groups, per_group, -1)  # (G, out/G, in/G * kh * kw)
        signs = torch.where(w < 0, -1.0, 1.0).to(torch.float64)  # binary_sign, exactly
        bias = None if layer.bias is None else layer.bias.detach().clone()
        return cls(layer.in_channels, out, tuple(layer.kernel_size), tuple(layer.stride),
                   layer.padding, tuple(layer.dilation), layer.groups,
                   tuple(layer._reversed_padding_repeated_twice),
                   _words_tensor(sign_bits(flat)), signs.sum(dim=1, keepdim=True),
                   xnor_alpha(w).clone(), bias)

    def _padding_correction(self, h: int, w: int) -> np.ndarray:
        """sum of sign(W) over the taps that fall on padding: (H' * W', out) int32."""
        key = (h, w, self.tap_sums._version)
        if self._correction is None or self._correction[0] != key:
            outside = F.pad(torch.zeros(1, 1, h, w, dtype=torch.float64), self.pad4, value=1.0)
            corr = F.conv2d(outside, self.tap_sums, None, self.stride, 0, self.dilation)[0]
            corr = corr.round().to(torch.int32).permute(1, 2, 0).reshape(-1, self.out_channels)
            self._correction = (key, corr.numpy())
        return self._correction[1]

    def _sign_dot_nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """The exact integer dots as an (N, H', W', out) int32 tensor (how they are computed)."""
        _check_cpu(x, self)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must be (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        n, _, h, w = x.shape
        left, right, top, bottom = self.pad4
        negative = np.pad((x.detach() < 0).cpu().numpy(),
                          ((0, 0), (0, 0), (top, bottom), (left, right)))  # pads as +1 (bit 0)
        (kh, kw), (dh, dw), (sh, sw) = self.kernel_size, self.dilation, self.stride
        window = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        if negative.shape[2] < window[0] or negative.shape[3] < window[1]:
            raise ValueError(f"a {h}x{w} input with padding {self.padding} is smaller than the "
                             f"{kh}x{kw} kernel (dilation {self.dilation})")
        patches = np.lib.stride_tricks.sliding_window_view(negative, window, axis=(2, 3))
        patches = patches[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, H', W', kh, kw), a view
        out_h, out_w = patches.shape[2:4]
        patches = patches.transpose(0, 2, 3, 1, 4, 5)  # (N, H', W', C, kh, kw)
        per_in, per_out = self.in_channels // self.groups, self.out_channels // self.groups
        n_bits = per_in * kh * kw
        weights = _words_array(self.weight_bits)
        dots = np.empty((n, out_h * out_w, self.out_channels), np.int32)
        for g in range(self.groups):
            rows = patches[:, :, :, g * per_in:(g + 1) * per_in].reshape(-1, n_bits)  # im2col
            dots[:, :, g * per_out:(g + 1) * per_out] = xnor_popcount_dot(
                pack_sign_bits(rows), weights[g], n_bits).reshape(n, out_h * out_w, per_out)
        dots -= self._padding_correction(h, w)  # the padded taps counted as +1, taken back
        return torch.from_numpy(dots).view(n, out_h, out_w, self.out_channels)

    @torch.no_grad()
    def sign_dot(self, x: torch.Tensor) -> torch.Tensor:
        """conv(sign(x), sign(W)) with zero padding: (N, C, H, W) -> (N, out, H', W') int32,
        exactly the integers the float simulation computes."""
        return self._sign_dot_nhwc(x).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The simulation's (dot * K) * alpha + bias, computed in place in (N, H', W', out)
        order (the order the dots come in), returned contiguous (N, out, H', W') like
        ``xnor_conv2d``'s: a channels_last output would send the next layers down other
        kernels (other summation orders), and a model would no longer match its simulation
        bit for bit."""
        out = self._sign_dot_nhwc(x).to(x.dtype)  # (N, H', W', out): exact integers
        k = binary_input_scale(x, self.kernel_size, self.stride, self.padding, self.dilation,
                               self.groups)  # (N, G, H', W'), as xnor_conv2d
        n, h, w, _ = out.shape
        per_out = self.out_channels // self.groups
        grouped = out.view(n, h, w, self.groups, per_out)  # K broadcasts over a group's outputs
        grouped.mul_(k.permute(0, 2, 3, 1).unsqueeze(-1))
        out.mul_(self.alpha.to(x.dtype))
        if self.bias is not None:
            out.add_(self.bias)
        return out.permute(0, 3, 1, 2).contiguous()

    def size_bits(self) -> int:
        """Storage: the sign words (tail bits included), 32 per alpha and per bias."""
        return (self.weight_bits.numel() * WORD_BITS + 32 * self.alpha.numel()
                + (0 if self.bias is None else 32 * self.bias.numel()))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, "
                f"words={self.weight_bits.shape[-1]}")


def pack_xnor_(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Replace every ``BinaryConv2d``/``BinaryLinear`` with ``method="xnor_net"`` by its packed
    form in place (inference only). Returns per layer: the packed kind, its ``size_bits`` and
    the words per dot product.

    Raises ``ValueError`` when the model has no XNOR-Net layer (``binarize_`` it with
    ``BinaryConfig(method="xnor_net")`` first; ``binaryconnect``/``xnor`` layers binarize only
    the weights, so their inputs have no bits to pack).
    """
    root = unwrap_model(model)
    chosen = [(name, m) for name, m in root.named_modules()
              if isinstance(m, (BinaryConv2d, BinaryLinear)) and m.method == "xnor_net"]
    if not chosen:
        methods = sorted({m.method for m in root.modules()
                          if isinstance(m, (BinaryConv2d, BinaryLinear))})
        found = f"binary layers with method {methods}" if methods else "no binary layer"
        raise ValueError(f"{type(root).__name__} has no XNOR-Net layer to pack ({found}); "
                         "binarize it with method='xnor_net' first")
    report = {}
    for name, module in chosen:
        packed = (PackedXnorConv2d if isinstance(module, BinaryConv2d) else
                  PackedXnorLinear).from_binary(module)
        set_module(root, name, packed)
        report[name] = {"kind": type(packed).__name__, "size_bits": packed.size_bits(),
                        "words_per_dot": packed.weight_bits.shape[-1]}
    return report


__all__ = [
    "PackedXnorConv2d", "PackedXnorLinear", "WORD_BITS", "pack_sign_bits", "pack_xnor_",
    "sign_bits", "tail_mask", "words_for", "xnor_popcount_dot",
]
