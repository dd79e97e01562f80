"""airbench's fast layout built from Fire modules: the SqueezeNet-family model of the
best-accuracy recipe (``recipes/cifar10_best.yaml``, issue 20).

``fire_groups_cifar`` keeps everything of ``airbench_cifar`` (``models/convgroups.py``) that makes
it train fast on few cores -- the 2x2 stem a whitening can initialise, pooling right after each
group's first block so only one block per group runs at the group's full resolution, a global
max-pool and a scaled bias-free classifier -- and replaces each 3x3 convolution by a Fire module
(squeeze 1x1 -> expand 1x1 | expand 3x3, BatchNorm and ReLU after each conv; airbench's GELU
halves the training speed inside Fires on a 2-core CPU, 471 against 908 img/s in bf16 at batch
256, AMD EPYC with AVX-512 BF16, 2026-12-03, so it is an option only). A group is

    Fire(in -> width) -> max-pool 2 -> (fires_per_group - 1) x Fire(width -> width, bypass)

with squeeze planes ``squeeze_ratio * width`` (the paper's SR) and expand planes split
``pct3x3`` : 1 - ``pct3x3`` between 3x3 and 1x1 (the paper's design-space knobs). The Fires
after the pool add their input (``bypass: simple``, the paper's best variant; ``complex`` and
``none`` are there for comparison). At widths 96-192-384, three Fires a group and SR 0.25 it is
18 conv layers deep with 855,336 parameters and 48.9M multiply-accumulates at 32 px.
``pool_after`` moves each group's pool after its n-th Fire (SqueezeNet's third strategy,
downsample late): ``pool_after=2`` keeps the parameters and makes it 77.6M MACs.
"""
from __future__ import annotations

import torch.nn as nn

from squeezelab.layers.fire import BYPASS_KINDS, Fire
from squeezelab.models.convgroups import ConvGroupsNet
from squeezelab.models.registry import register_model


class FireGroup(nn.Sequential):
    """Fire(in -> out), then (fires - 1) x Fire(out -> out) with ``bypass``, and a max-pool 2
    after the first ``pool_after`` Fires (after the first, airbench's place, by default)."""

    def __init__(self, in_chans: int, out_chans: int, fires: int = 3,
                 squeeze_ratio: float = 0.25, pct3x3: float = 0.5, bypass: str = "simple",
                 activation: str = "relu", pool_after: int = 1):
        if fires < 1:
            raise ValueError(f"fires_per_group must be >= 1, got {fires!r}")
        if not 1 <= pool_after <= fires:
            raise ValueError(f"pool_after must be between 1 and fires_per_group ({fires}), "
                             f"got {pool_after!r}")
        if not 0 < squeeze_ratio <= 1:
            raise ValueError(f"squeeze_ratio must be in (0, 1], got {squeeze_ratio!r}")
        if not 0 < pct3x3 < 1:
            raise ValueError(f"pct3x3 must be strictly between 0 and 1, got {pct3x3!r}")
        if bypass not in BYPASS_KINDS:
            raise ValueError(f"bypass must be one of {BYPASS_KINDS}, got {bypass!r}")
        squeeze = max(1, round(out_chans * squeeze_ratio))
        e3 = round(out_chans * pct3x3)
        if not 0 < e3 < out_chans:
            raise ValueError(f"pct3x3 {pct3x3} leaves no 1x1 or no 3x3 expand channels at "
                             f"width {out_chans}")

        def fire(cin: int, kind: str) -> Fire:
            return Fire(cin, squeeze, out_chans - e3, e3, batch_norm=True,
                        activation=activation, bypass=kind)

        # the first Fire changes the width, so only a "complex" bypass (a 1x1 conv) fits it
        first = fire(in_chans, "complex" if bypass == "complex" else "none")
        fires_list = [first, *(fire(out_chans, bypass) for _ in range(fires - 1))]
        super().__init__(*fires_list[:pool_after], nn.MaxPool2d(2), *fires_list[pool_after:])


@register_model(input_size=32, num_classes=10, tags=("cifar", "best"))
def fire_groups_cifar(num_classes: int = 10, in_chans: int = 3,
                      widths: tuple[int, ...] = (96, 192, 384), fires_per_group: int = 3,
                      squeeze_ratio: float = 0.25, pct3x3: float = 0.5,
                      bypass: str = "simple", activation: str = "relu", stem_chans: int = 24,
                      logit_scale: float = 1 / 9, pool_after: int = 1):
    """airbench's layout with Fire modules (855,336 parameters at 10 classes)."""

    def group(cin: int, cout: int) -> FireGroup:
        return FireGroup(cin, cout, fires_per_group, squeeze_ratio, pct3x3, bypass, activation,
                         pool_after)

    return ConvGroupsNet(num_classes, in_chans, tuple(widths), stem_chans, logit_scale, group)


__all__ = ["FireGroup", "fire_groups_cifar"]
