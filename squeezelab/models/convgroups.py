"""A fast plain network for CIFAR-10: a 2x2 patch stem and three groups of two 3x3 convolutions,
the layout of Keller Jordan's airbench94 (arXiv 2404.00498, section 3), narrowed to fewer than
a million parameters. On a 2-core CPU it trains about twice as many images per second as the
fast-recipe SqueezeNet (bf16, batch 256: 1,888 against 844 img/s, quiet Intel Xeon with AMX,
2026-12-02): dense 3x3 convolutions on few, wide layers suit oneDNN better than Fire modules'
many small 1x1 ones.

``airbench_cifar``: stem Conv2d(3, 24, 2) with a bias (the whitening layer: ``stem_init:
whitening`` fills its 24 filters with the 12 patch eigenvectors and their negations) and GELU;
then per group: conv 3x3 -> max-pool 2 -> BatchNorm -> GELU -> conv 3x3 -> BatchNorm -> GELU,
at ``widths`` (64, 128, 192; airbench94's are 64, 256, 256); a global max-pool, and a linear
classifier without bias whose logits are scaled by ``logit_scale`` (1/9, airbench's) so that
label smoothing and the early steps see soft outputs. 32 px images reach the classifier at 3x3
(31, 15, 7, 3); smaller ones work too (the pool is global), as progressive resizing needs.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn

from squeezelab.models.registry import register_model


class ConvGroup(nn.Sequential):
    """conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU (no conv biases: the
    BatchNorms that follow have them). ``identity_init``: each convolution's first ``in``
    filters start as the identity (Dirac) on its input channels, the rest at random, as
    airbench's do: an implicit shortcut that lets the first large steps pass the signal
    through unchanged."""

    def __init__(self, in_chans: int, out_chans: int, identity_init: bool = False):
        first = nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False)
        second = nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False)
        if identity_init:
            for conv in (first, second):
                dirac_first_filters_(conv)
        super().__init__(first, nn.MaxPool2d(2), nn.BatchNorm2d(out_chans), nn.GELU(),
                         second, nn.BatchNorm2d(out_chans), nn.GELU())


@torch.no_grad()
def dirac_first_filters_(conv: nn.Conv2d) -> None:
    """Set ``conv``'s first min(out, in) filters to the identity on their own input channel
    (a 1 at the kernel's centre): filter i passes input channel i through."""
    weight = conv.weight
    nn.init.dirac_(weight[:min(weight.shape[0], weight.shape[1])])


class ConvGroupsNet(nn.Module):
    """The stem, one ``group(in_chans, out_chans)`` per width, a global max-pool and a scaled
    linear classifier. ``group`` is what each group is made of: ``ConvGroup`` (airbench's
    plain convolutions) or, in ``models/firegroups.py``, Fire modules."""

    def __init__(self, num_classes: int, in_chans: int, widths: tuple[int, ...],
                 stem_chans: int, logit_scale: float,
                 group: Callable[[int, int], nn.Module] = ConvGroup):
        super().__init__()
        if len(widths) < 1 or min(widths) < 1:
            raise ValueError(f"widths must be one or more positive channel counts, got "
                             f"{widths!r}")
        if logit_scale <= 0:
            raise ValueError(f"logit_scale must be > 0, got {logit_scale!r}")
        chans = [stem_chans, *widths]
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, stem_chans, 2, bias=True), nn.GELU(),
            *(group(a, b) for a, b in zip(chans, chans[1:])),
            nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = float(logit_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)) * self.logit_scale


@register_model(input_size=32, num_classes=10, tags=("cifar", "fast"))
def airbench_cifar(num_classes: int = 10, in_chans: int = 3,
                   widths: tuple[int, ...] = (64, 128, 192), stem_chans: int = 24,
                   logit_scale: float = 1 / 9, identity_init: bool = False):
    """airbench94's plain layout at widths 64-128-192 (828,600 parameters at 10 classes);
    ``identity_init``: its 3x3 convolutions start with identity filters (``ConvGroup``)."""
    return ConvGroupsNet(num_classes, in_chans, tuple(widths), stem_chans, logit_scale,
                         group=partial(ConvGroup, identity_init=bool(identity_init)))


__all__ = ["ConvGroup", "ConvGroupsNet", "airbench_cifar", "dirac_first_filters_"]
