"""Low-rank factorisation of Conv2d and Linear layers by truncated SVD (Denton et al. 2014,
"Exploiting Linear Structure Within Convolutional Networks for Efficient Evaluation",
arXiv 1404.0736).

A weight viewed as the matrix W (out, n), n = in * kh * kw for a conv, is factorised as
W ~ B A with B = U_r sqrt(S_r) (out, r) and A = sqrt(S_r) V_r^T (r, n). A conv becomes a kxk
conv with r output channels (weights A, the layer's stride/padding/dilation, no bias) followed
by a 1x1 conv to ``out`` channels (weights B, the original bias); a Linear becomes two Linears.
The rank is the smallest r keeping a fraction ``energy`` of sum(s_i^2), or a fixed ``rank``; a
layer is left alone when r * (n + out) >= out * n, i.e. factorising saves no parameters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from squeezelab.compress.quantization.select import (
    LayerSelection,
    check_int,
    select_layers,
    set_module,
)


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r with sum(s[:r]^2) >= energy * sum(s^2); ``singular_values`` sorted descending."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    sq = singular_values.detach().double() ** 2
    total = sq.sum()
    if total == 0:
        return 1
    cum = torch.cumsum(sq, 0)
    # Relative slack of 1e-12 so that energy=1.0 is reached despite rounding in the cumsum.
    reached = cum >= energy * total * (1 - 1e-12)
    return int(reached.nonzero()[0, 0]) + 1


def low_rank_factors(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated SVD of ``matrix`` (out, n) at ``rank``: (B (out, r), A (r, n)) with B @ A the
    best rank-r approximation (computed in float64, returned in the matrix's dtype)."""
    check_int("rank", rank, 1, min(matrix.shape))
    u, s, vh = torch.linalg.svd(matrix.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    b = u[:, :rank] * root  # (out, r)
    a = root[:, None] * vh[:rank]  # (r, n)
    return b.to(matrix.dtype), a.to(matrix.dtype)


@dataclass(kw_only=True)
class LowRankConfig(LayerSelection):
    """Either ``energy`` in (0, 1] (fraction of squared singular values kept) or a fixed
    ``rank``; set the other to None."""

    energy: float | None = 0.9
    rank: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.energy is None) == (self.rank is None):
            raise ValueError(f"set exactly one of energy and rank, "
                             f"got energy={self.energy}, rank={self.rank}")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise ValueError(f"energy must be in (0, 1], got {self.energy}")
        if self.rank is not None:
            check_int("rank", self.rank, 1)


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def factorize_layer(module: nn.Module, rank: int) -> nn.Sequential:
    """The two-layer replacement of a Conv2d (groups=1) or Linear at ``rank``."""
    w = module.weight
    b_mat, a_mat = low_rank_factors(w.reshape(w.shape[0], -1), rank)
    kw = {"device": w.device, "dtype": w.dtype}
    if isinstance(module, nn.Conv2d):
        first = nn.Conv2d(module.in_channels, rank, module.kernel_size, module.stride,
                          module.padding, module.dilation, 1, False, module.padding_mode, **kw)
        second = nn.Conv2d(rank, module.out_channels, 1, bias=module.bias is not None, **kw)
        first.weight.data.copy_(a_mat.reshape(rank, *w.shape[1:]))  # (r, n) -> (r, in, kh, kw)
        second.weight.data.copy_(b_mat.reshape(module.out_channels, rank, 1, 1))
    else:
        first = nn.Linear(module.in_features, rank, bias=False, **kw)
        second = nn.Linear(rank, module.out_features, bias=module.bias is not None, **kw)
        first.weight.data.copy_(a_mat)
        second.weight.data.copy_(b_mat)
    if module.bias is not None:
        second.bias.data.copy_(module.bias.detach())
    return nn.Sequential(first, second)


@torch.no_grad()
def low_rank_(model: nn.Module, config: LowRankConfig) -> dict[str, dict[str, Any]]:
    """Factorise the selected layers in place (each becomes an ``nn.Sequential`` of two layers).

    Returns per layer: ``rank``, ``full_rank``, ``energy_kept`` (fraction of sum s^2),
    ``params_before``, ``params_after`` (weights and biases) and ``skipped`` (None, or why the
    layer was left as it was: a grouped conv, or no parameter saving at that rank).
    """
    report = {}
    for name, module in select_layers(model, config):
        w = module.weight
        out, n = w.shape[0], w[0].numel()
        full_rank = min(out, n)
        before = _num_params(module)
        entry: dict[str, Any] = {"full_rank": full_rank, "params_before": before}
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            report[name] = {**entry, "rank": full_rank, "energy_kept": 1.0, "params_after": before,
                            "skipped": f"grouped conv (groups={module.groups})"}
            continue
        s = torch.linalg.svdvals(w.detach().double().reshape(out, n))
        rank = (rank_for_energy(s, config.energy) if config.energy is not None
                else min(config.rank, full_rank))
        kept = float((s[:rank] ** 2).sum() / (s**2).sum()) if s.any() else 1.0
        if rank * (n + out) >= out * n:
            report[name] = {**entry, "rank": rank, "energy_kept": kept, "params_after": before,
                            "skipped": f"rank {rank} saves no parameters "
                                       f"({rank * (n + out)} >= {out * n})"}
            continue
        new = factorize_layer(module, rank)
        set_module(model, name, new)
        report[name] = {**entry, "rank": rank, "energy_kept": kept,
                        "params_after": _num_params(new), "skipped": None}
    return report


__all__ = ["LowRankConfig", "factorize_layer", "low_rank_", "low_rank_factors", "rank_for_energy"]
