"""Winograd convolution F(2x2,3x3) and F(4x4,3x3) (Lavin and Gray 2016, "Fast Algorithms for
Convolutional Neural Networks", arXiv 1509.09308).

A stride-1 3x3 convolution computes each m x m output tile from an (m+2) x (m+2) input tile.
Winograd's minimal filtering algorithm F(m x m, 3 x 3) does it with (m+2)^2 multiplications per
tile and channel pair instead of 9 m^2: transform the input tile (``B^T d B``) and the filter
(``G g G^T``) to an (m+2) x (m+2) "transform domain", multiply elementwise, sum over input
channels, and transform back (``A^T M A``). Summing over input channels at each of the (m+2)^2
positions is a matrix product, so the elementwise stage is (m+2)^2 GEMMs of (out x in) by
(in x tiles): 16 for F(2x2,3x3), 36 for F(4x4,3x3) (the paper's section 4). That is 2.25x and
4x fewer multiplications than direct convolution, before the transforms' cost.

The matrices ``A``, ``G``, ``B`` come from the Toom-Cook construction: evaluate at the
interpolation points (0, 1, -1 and infinity for F(2,3); 0, +-1, +-2 and infinity for F(4,3)),
multiply, interpolate. ``toom_cook_matrices`` derives them in exact rational arithmetic; the
paper's written-out matrices are ``WINOGRAD_MATRICES`` (the tests check they agree). Larger
tiles need larger points, so F(4x4,3x3) loses more fp32 precision than F(2x2,3x3) (its
transforms hold entries up to 8 and fractions 1/24); ``winograd_conv2d`` states the errors
measured against direct convolution.

Why here, as ``compress/winograd.py``: like the quantizers it changes how a trained layer
computes, not what it learned, and it is a lecture's compression method (fewer multiplications);
unlike them it is exact up to float rounding and changes no weight, so it is neither a quantizer
in ``quantization/``'s registry nor a pruning step, and one module (beside ``fold.py``, the
other exact rewrite of a trained layer) is all it needs. ``WinogradConv2d`` is an ``nn.Conv2d``
holding the original weight and bias Parameters, so state dicts and checkpoints are unchanged.
"""
from __future__ import annotations

from fractions import Fraction
from functools import cache
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.models import unwrap_model

TILES = (2, 4)  # the output tile sides m this module implements: F(2x2,3x3) and F(4x4,3x3)
KERNEL = 3  # r: only 3x3 filters

# The paper's matrices, as printed in section 4 (arXiv 1509.09308v2): Y = A^T [(G g) * (B^T d)].
WINOGRAD_MATRICES: dict[int, dict[str, list[list[Fraction]]]] = {
    2: {
        "BT": [[1, 0, -1, 0],
               [0, 1, 1, 0],
               [0, -1, 1, 0],
               [0, 1, 0, -1]],
        "G": [[1, 0, 0],
              [Fraction(1, 2), Fraction(1, 2), Fraction(1, 2)],
              [Fraction(1, 2), Fraction(-1, 2), Fraction(1, 2)],
              [0, 0, 1]],
        "AT": [[1, 1, 1, 0],
               [0, 1, -1, -1]],
    },
    4: {
        "BT": [[4, 0, -5, 0, 1, 0],
               [0, -4, -4, 1, 1, 0],
               [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0],
               [0, 4, 0, -5, 0, 1]],
        "G": [[Fraction(1, 4), 0, 0],
              [Fraction(-1, 6), Fraction(-1, 6), Fraction(-1, 6)],
              [Fraction(-1, 6), Fraction(1, 6), Fraction(-1, 6)],
              [Fraction(1, 24), Fraction(1, 12), Fraction(1, 6)],
              [Fraction(1, 24), Fraction(-1, 12), Fraction(1, 6)],
              [0, 0, 1]],
        "AT": [[1, 1, 1, 1, 1, 0],
               [0, 1, -1, 2, -2, 0],
               [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]],
    },
}
#: The finite interpolation points of each tile (infinity is the last point of both).
POINTS = {2: (0, 1, -1), 4: (0, 1, -1, 2, -2)}


# --------------------------------------------------------------------------- the matrices


def _poly_from_roots(roots: list[Fraction]) -> list[Fraction]:
    """Coefficients (constant first) of prod (x - root)."""
    coeffs = [Fraction(1)]
    for root in roots:
        shifted = [Fraction(0)] + coeffs  # x * p(x)
        coeffs = [s - root * c for s, c in zip(shifted, coeffs + [Fraction(0)])]
    return coeffs


def toom_cook_matrices(m: int, r: int, points: tuple[int | Fraction, ...]
                       ) -> tuple[list[list[Fraction]], list[list[Fraction]], list[list[Fraction]]]:
    """(A^T, G, B^T) of F(m, r) from ``points`` (m + r - 2 distinct finite points) plus infinity,
    in exact rational arithmetic, with the fractions in G (the paper's convention).

    F(m, r) is the transpose of the Toom-Cook algorithm that multiplies a degree m-1 polynomial
    u by a degree r-1 polynomial g: evaluate both at every point (the Vandermonde rows
    [p^0, p^1, ...]; infinity evaluates the leading coefficient), multiply, and interpolate the
    product s(x) = sum_i s(p_i) L_i(x) + s_top M(x), where M(x) = prod (x - p_i) and L_i is the
    Lagrange basis polynomial of p_i. Transposing that bilinear algorithm turns "multiply
    polynomials" into "correlate a length n = m + r - 1 signal with an r-tap filter":
    y = A^T [(G g) * (B^T d)] with A^T = (Vandermonde of u)^T, G = Vandermonde of g, and row i
    of B^T the coefficients of L_i (the last row those of M). The Lagrange denominators
    prod_{j != i} (p_i - p_j) are moved from B^T into G, which leaves B^T integer.
    """
    n = m + r - 1
    finite = [Fraction(p) for p in points]
    if len(finite) != n - 1 or len(set(finite)) != len(finite):
        raise ValueError(f"F({m},{r}) needs {n - 1} distinct finite points, got {points!r}")

    def vandermonde(cols: int) -> list[list[Fraction]]:  # (n, cols); the last row is infinity
        return [[p ** k for k in range(cols)] for p in finite] + [
            [Fraction(int(k == cols - 1)) for k in range(cols)]]

    denominators = []
    for i, p in enumerate(finite):
        d = Fraction(1)
        for j, q in enumerate(finite):
            if j != i:
                d *= p - q
        denominators.append(d)
    g_rows = vandermonde(r)
    G = [[v / denominators[i] for v in row] if i < n - 1 else row for i, row in enumerate(g_rows)]
    BT = [_poly_from_roots([q for j, q in enumerate(finite) if j != i]) + [Fraction(0)]
          for i in range(n - 1)]
    BT.append(_poly_from_roots(finite))
    u_rows = vandermonde(m)  # (n, m)
    AT = [[u_rows[i][k] for i in range(n)] for k in range(m)]
    return AT, G, BT


def winograd_matrices(tile: int, dtype: torch.dtype = torch.float64,
                      device: torch.device | str | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's (A^T, G, B^T) of F(tile x tile, 3x3) as tensors: (m, a), (a, 3), (a, a), with
    a = tile + 2. Cached per (tile, dtype, device): treat them as read-only."""
    _check_tile(tile)
    return _matrices(tile, dtype, torch.device("cpu" if device is None else device))


@cache
def _matrices(tile: int, dtype: torch.dtype, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mats = WINOGRAD_MATRICES[tile]
    return tuple(torch.tensor([[float(v) for v in row] for row in mats[key]], dtype=dtype,
                              device=device) for key in ("AT", "G", "BT"))


@cache
def _kron_matrices(tile: int, dtype: torch.dtype, device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B^T kron B^T, A^T kron A^T): (a*a, a*a) and (m*m, a*a), so that for a tile d flattened
    row-major, B^T d B flattened is (B^T kron B^T) vec(d)."""
    at, _, bt = winograd_matrices(tile, torch.float64, device)
    return torch.kron(bt, bt).to(dtype), torch.kron(at, at).to(dtype)


def _check_tile(tile: Any) -> None:
    if isinstance(tile, bool) or tile not in TILES:
        raise ValueError(f"tile must be one of {TILES} (F(2x2,3x3) or F(4x4,3x3)), got {tile!r}")


# --------------------------------------------------------------------------- the convolution


def transform_filter(weight: torch.Tensor, tile: int) -> torch.Tensor:
    """U = G g G^T for every (out, in) filter: (O, C, 3, 3) -> (a*a, O, C), computed in float64
    (a deployed kernel computes it once per weight) and returned in the weight's dtype."""
    _, G, _ = winograd_matrices(tile, torch.float64, weight.device)
    a = tile + 2
    u = torch.einsum("ik,ockl,jl->ijoc", G, weight.to(torch.float64), G)  # (a, a, O, C)
    return u.reshape(a * a, weight.shape[0], weight.shape[1]).to(weight.dtype)


def winograd_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    padding: tuple[int, int, int, int] | int = 0, tile: int = 2,
                    transformed_weight: torch.Tensor | None = None) -> torch.Tensor:
    """A stride-1, dilation-1, ungrouped 3x3 convolution by Winograd F(tile x tile, 3x3).

    ``x``: (N, C, H, W); ``weight``: (O, C, 3, 3); ``padding``: zeros on every side (an int) or
    (left, right, top, bottom) as ``F.pad`` takes it. ``transformed_weight`` is
    ``transform_filter(weight, tile)`` when the caller keeps it.

    The steps: zero-pad so that the output is a whole number of m x m tiles; cut overlapping
    (m+2) x (m+2) input tiles with stride m; transform them all with one GEMM; one batched
    matmul over the (m+2)^2 transform-domain positions multiplies by the transformed filters
    and sums over input channels; transform back with one GEMM; lay the tiles out as an image
    and crop the ragged edge. The two-sided transforms B^T d B and A^T M A are applied as
    single matrices on the flattened tile, (B^T kron B^T) vec(d) and (A^T kron A^T) vec(M):
    more multiplications than the two one-sided products (a^4 against 2 a^3 per tile), but
    one GEMM with a^2 = 16 or 36 terms per dot product instead of two with a = 4 or 6, which
    ran the transforms 1.5x (F(4x4)) to 6x (F(2x2)) faster on this project's CPU.

    Precision in fp32 (nn.Conv2d's default initialisation, inputs ~ N(0, 1), outputs up to
    ~2.7; largest error against a float64 convolution, 16 to 1024 input channels): direct
    ``F.conv2d`` 1e-6, F(2x2,3x3) 0.5-2e-6, F(4x4,3x3) 1-3e-5, about 20x worse (its
    transforms multiply by up to 8 and 25 and divide by 24). Against fp32 ``F.conv2d`` the
    tests hold F(2x2) to 1e-5 and F(4x4) to 1e-4 absolute; the benchmark's batch-64 layers
    reach 5e-6 and 6e-5.
    """
    _check_tile(tile)
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[2:] != (KERNEL, KERNEL):
        raise ValueError(f"winograd_conv2d needs a (N, C, H, W) input and an (O, C, 3, 3) weight, "
                         f"got {tuple(x.shape)} and {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"input has {x.shape[1]} channels, the weight expects {weight.shape[1]}")
    left, right, top, bottom = (padding,) * 4 if isinstance(padding, int) else padding
    m, a = tile, tile + 2
    n, c, h, w = x.shape
    o = weight.shape[0]
    out_h, out_w = h + top + bottom - 2, w + left + right - 2
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a {h}x{w} input with padding {padding} is smaller than the 3x3 kernel")
    tiles_h, tiles_w = -(-out_h // m), -(-out_w // m)
    # extra zeros at the bottom/right so the tiles cover the padded input exactly
    x = F.pad(x, (left, right + tiles_w * m - out_w, top, bottom + tiles_h * m - out_h))
    d = x.unfold(2, a, m).unfold(3, a, m)  # (N, C, th, tw, a, a): overlapping tiles, a view
    p = n * tiles_h * tiles_w
    d = d.permute(4, 5, 1, 0, 2, 3).reshape(a * a, c * p)  # (a*a, C*N*th*tw): one copy
    bt2, at2 = _kron_matrices(tile, x.dtype, x.device)
    v = (bt2 @ d).view(a * a, c, p)  # B^T d B of every tile, as one GEMM
    u = transform_filter(weight, tile) if transformed_weight is None else transformed_weight
    mm = torch.bmm(u, v)  # (a*a, O, N*th*tw): the 16 or 36 GEMMs, summing over input channels
    y = at2 @ mm.view(a * a, o * p)  # A^T M A of every tile: (m*m, O*N*th*tw)
    y = y.view(m, m, o, n, tiles_h, tiles_w).permute(3, 2, 4, 0, 5, 1)  # (N, O, th, m, tw, m)
    y = y.reshape(n, o, tiles_h * m, tiles_w * m)[:, :, :out_h, :out_w]
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return y


def winograd_unsupported(conv: nn.Module) -> str | None:
    """Why ``conv`` cannot run as Winograd F(m x m, 3x3), or None when it can."""
    if not isinstance(conv, nn.Conv2d):
        return f"it is a {type(conv).__name__}, not a Conv2d"
    problems = []
    if tuple(conv.kernel_size) != (KERNEL, KERNEL):
        problems.append(f"kernel_size {tuple(conv.kernel_size)}")
    if tuple(conv.stride) != (1, 1):
        problems.append(f"stride {tuple(conv.stride)}")
    if tuple(conv.dilation) != (1, 1):
        problems.append(f"dilation {tuple(conv.dilation)}")
    if conv.groups != 1:
        problems.append(f"groups {conv.groups}")
    return ", ".join(problems) or None


SUPPORTED = "kernel_size 3x3, stride 1, dilation 1, groups 1 (any padding)"


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (3x3, stride 1, dilation 1, groups 1) computed by Winograd F(m x m, 3x3).

    It holds the original layer's weight and bias Parameters, so its state dict is the
    original's. The transformed filter is cached for inference (no grad) and recomputed when
    the weight changes; with grad enabled it is recomputed every call so gradients reach the
    weight.
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, tile: int = 2, name: str | None = None) -> WinogradConv2d:
        """Wrap ``conv``; ``name`` (its module path) goes into the error when it is not
        eligible."""
        _check_tile(tile)
        problem = winograd_unsupported(conv)
        if problem:
            label = f"layer {name!r} ({conv})" if name else f"layer {conv}"
            raise ValueError(f"{label} cannot use Winograd F({tile}x{tile},3x3): it supports "
                             f"{SUPPORTED}; got {problem}")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                  conv.padding_mode, device="meta")
        new.weight, new.bias = conv.weight, conv.bias  # the same Parameters
        new.tile = tile
        new._cache = None  # (weight version key, transformed weight)
        return new

    def transformed_weight(self) -> torch.Tensor:
        """``transform_filter(weight, tile)``, cached while the weight is unchanged (no grad)."""
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return transform_filter(self.weight, self.tile)
        key = (self.weight._version, self.weight.data_ptr(), self.weight.dtype, self.weight.device)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, transform_filter(self.weight, self.tile))
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self._reversed_padding_repeated_twice  # (left, right, top, bottom), also "same"
        if self.padding_mode != "zeros":
            x = F.pad(x, pad, mode=self.padding_mode)
            pad = (0, 0, 0, 0)
        return winograd_conv2d(x, self.weight, self.bias, tuple(pad), self.tile,
                               self.transformed_weight())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", winograd=F({self.tile}x{self.tile},3x3)"


def winograd_(model: nn.Module, tile: int = 2) -> dict[str, Any]:
    """Swap every eligible ``nn.Conv2d`` (3x3, stride 1, dilation 1, groups 1) of ``model`` for a
    ``WinogradConv2d`` in place, leaving every other layer as it is.

    Subclasses of Conv2d (quantized, binary, already Winograd) compute differently and are
    kept. Returns ``{"tile": tile, "swapped": [names], "kept": {name: reason}}`` over the
    model's convolutions.
    """
    _check_tile(tile)
    root = unwrap_model(model)
    swapped, kept = [], {}
    for name, module in list(root.named_modules()):
        if not isinstance(module, nn.Conv2d):
            continue
        if type(module) is not nn.Conv2d:
            kept[name] = f"a {type(module).__name__}, not a plain Conv2d"
            continue
        problem = winograd_unsupported(module)
        if problem:
            kept[name] = problem
            continue
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, child, WinogradConv2d.from_conv(module, tile, name))
        swapped.append(name)
    return {"tile": tile, "swapped": swapped, "kept": kept}


# --------------------------------------------------------------------------- multiplications


def winograd_layer_multiplies(in_channels: int, out_channels: int, out_h: int, out_w: int,
                              tile: int) -> dict[str, Any]:
    """Multiplications of one image through a 3x3 stride-1 layer with an out_h x out_w output:
    direct convolution vs Winograd F(tile x tile, 3x3).

    * ``direct``: 9 per output pixel and (in, out) channel pair;
    * ``winograd_elementwise``: (m+2)^2 per output tile and channel pair, over
      ceil(out_h/m) * ceil(out_w/m) tiles (a ragged edge still costs a whole tile);
    * ``input_transform`` (B^T d B: (m+2)^4 per tile and input channel) and
      ``output_transform`` (A^T M A: m^2 (m+2)^2 per tile and output channel), counted as the
      dense Kronecker-product GEMMs ``winograd_conv2d`` does (two one-sided products would
      take 2 (m+2)^3 and m (m+2)^2 + m^2 (m+2); the paper's matrices are mostly 0 and +-1, so a
      hand-written kernel multiplies far less still);
    * ``filter_transform`` (G g G^T: 9 (m+2) + 3 (m+2)^2 per channel pair): once per weight,
      not per image, so not in ``winograd_total``.

    ``tile_ratio`` = 9 m^2 / (m+2)^2, the per-tile saving of the elementwise stage: 2.25 for
    F(2x2,3x3), 4 for F(4x4,3x3).
    """
    _check_tile(tile)
    m, a = tile, tile + 2
    tiles = -(-out_h // m) * -(-out_w // m)
    pairs = in_channels * out_channels
    direct = pairs * out_h * out_w * KERNEL * KERNEL
    elementwise = pairs * tiles * a * a
    input_t = in_channels * tiles * a ** 4
    output_t = out_channels * tiles * m * m * a * a
    total = elementwise + input_t + output_t
    return {"tile": tile, "tiles": tiles, "direct": direct, "winograd_elementwise": elementwise,
            "input_transform": input_t, "output_transform": output_t,
            "filter_transform": pairs * (KERNEL * a + KERNEL * a * a),
            "winograd_total": total, "tile_ratio": KERNEL * KERNEL * m * m / (a * a),
            "elementwise_ratio": direct / elementwise, "total_ratio": direct / total}


@torch.no_grad()
def winograd_multiply_table(model: nn.Module, input_size: int | tuple[int, int] = 224,
                            tile: int = 2, in_chans: int | None = None
                            ) -> dict[str, dict[str, Any]]:
    """``winograd_layer_multiplies`` for every Winograd-eligible conv of ``model`` (plain or
    already swapped), from the output sizes one image of ``input_size`` gives it."""
    _check_tile(tile)
    root = unwrap_model(model)
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in root.named_modules():
        if isinstance(module, nn.Conv2d) and winograd_unsupported(module) is None and (
                type(module) in (nn.Conv2d, WinogradConv2d)):
            handles.append(module.register_forward_hook(
                lambda mod, inp, out, name=name: shapes.__setitem__(name, tuple(out.shape))))
    was_training = root.training
    root.eval()
    try:
        height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
        if in_chans is None:
            first = next((m for m in root.modules() if isinstance(m, nn.Conv2d)), None)
            in_chans = first.in_channels if first is not None else 3
        param = next(root.parameters(), None)
        root(torch.zeros(1, in_chans, height, width,
                         device=param.device if param is not None else None))
    finally:
        for h in handles:
            h.remove()
        root.train(was_training)
    table = {}
    for name, (_, out_c, out_h, out_w) in shapes.items():
        conv = root.get_submodule(name)
        table[name] = {"in_channels": conv.in_channels, "out_channels": out_c,
                       "output": [out_h, out_w],
                       **winograd_layer_multiplies(conv.in_channels, out_c, out_h, out_w, tile)}
    return table


__all__ = [
    "POINTS", "SUPPORTED", "TILES", "WINOGRAD_MATRICES", "WinogradConv2d", "toom_cook_matrices",
    "transform_filter", "winograd_", "winograd_conv2d", "winograd_layer_multiplies",
    "winograd_matrices", "winograd_multiply_table", "winograd_unsupported",
]
