"""The tri-state ReLU of architecture learning (Srinivas & Babu, "Learning the Architecture of
Deep Neural Networks", arXiv 1511.05497):

    tsReLU(x) = w x        for x >= 0
              = w d x      otherwise

with one trainable gate ``w`` per output channel (a neuron: w = 1 keeps it, w = 0 removes
it) and one ``d`` per layer (d = 0: a ReLU; d = 1: the layer is linear, ``w x``, and can be
merged into the next one). Trained with a regulariser that pushes both to 0 or 1
(``squeezelab.train.architecture``) and rounded afterwards
(``squeezelab.compress.pruning.architecture``). With w = 1 and d = 0 it is exactly a ReLU.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def width_floor(num_channels: int, min_width: float) -> int:
    """How many channels of a ``num_channels``-wide layer architecture learning always keeps
    under the floor ``min_width`` (a fraction of the layer's width, in [0, 1)): 0 without a
    floor, else at least one, ``ceil(min_width * num_channels)``."""
    if not 0.0 <= min_width < 1.0:
        raise ValueError(f"min_width must be in [0, 1), got {min_width}")
    return 0 if min_width == 0 else max(1, math.ceil(min_width * num_channels))


def floor_mask(w: torch.Tensor, min_width: float) -> torch.Tensor:
    """Bool (C,): the ``width_floor`` channels of gates ``w`` with the largest w (ties: the
    lower index), the ones a floor keeps whatever their gates say."""
    keep = torch.zeros(w.shape, dtype=torch.bool, device=w.device)
    k = width_floor(w.numel(), min_width)
    if k:
        # a stable sort on -w: equal gates keep the lower index first
        keep[torch.sort(-w.detach(), stable=True).indices[:k]] = True
    return keep


class TsReLU(nn.Module):
    """Tri-state ReLU over ``num_channels`` channels (dim 1 of the input): parameters
    ``gate_w`` (num_channels,) and ``gate_d`` () start at ``w`` (1: every channel on) and ``d``
    (0: a ReLU), so a network whose ReLUs are replaced computes what it computed before."""

    def __init__(self, num_channels: int, w: float = 1.0, d: float = 0.0):
        super().__init__()
        if isinstance(num_channels, bool) or not isinstance(num_channels, int) \
                or num_channels < 1:
            raise ValueError(f"num_channels must be a positive integer, got {num_channels!r}")
        for name, value in (("w", w), ("d", d)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.num_channels = num_channels
        self.gate_w = nn.Parameter(torch.full((num_channels,), float(w)))
        self.gate_d = nn.Parameter(torch.tensor(float(d)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"TsReLU over {self.num_channels} channels got an input of shape "
                             f"{tuple(x.shape)}")
        w = self.gate_w.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))  # (C,) -> (1, C, 1, 1)
        # x >= 0: x; x < 0: d x. Written as relu(x) + d min(x, 0) so the gradient reaches d
        return w * (torch.relu(x) + self.gate_d.to(x.dtype) * torch.clamp(x, max=0))

    def extra_repr(self) -> str:
        return f"{self.num_channels}"


__all__ = ["TsReLU", "floor_mask", "width_floor"]
