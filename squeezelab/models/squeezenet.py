"""SqueezeNet (Iandola et al. 2016, arXiv 1602.07360), built from the paper's metaparameters.

Fire module i (0-based, i < num_fire) has e_i = base_e + incr_e * floor(i / freq) expand filters,
of which a fraction pct3x3 are 3x3, and s_i = squeeze_ratio * e_i squeeze filters. SqueezeNet
v1.0 is base_e=128, incr_e=128, freq=2, pct3x3=0.5, squeeze_ratio=0.125.

Module layout and state-dict keys of ``squeezenet1_0`` / ``squeezenet1_1`` are torchvision's
(``features.0``, ``features.3.squeeze``, ..., ``classifier.1``), with the same ceil-mode pooling
and the same initialisation (conv10 ~ N(0, 0.01), every other conv Kaiming-uniform, zero bias),
so a torchvision checkpoint loads with ``strict=True`` and gives the same outputs.
``init="xavier"`` initialises as the paper's own Caffe prototxt did instead (its "xavier"
filler: variance 1 / fan_in, half of Kaiming's), which is what keeps the bypass variants
without BatchNorm trainable: with Kaiming's, each identity bypass doubles the activations'
variance and the logits start out huge.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from squeezelab.layers import Fire, make_activation
from squeezelab.models.registry import register_model

#: the initialisations of the convs other than conv10 (``SqueezeNet(init=...)``)
INITS = ("kaiming", "xavier")


def fire_channels(
    num_fire: int, base_e: int, incr_e: int, freq: int, pct3x3: float, squeeze_ratio: float
) -> list[tuple[int, int, int]]:
    """(squeeze, expand1x1, expand3x3) channels of each Fire module, from the metaparameters."""
    if freq < 1:
        raise ValueError(f"freq must be >= 1, got {freq}")
    if not 0.0 <= pct3x3 <= 1.0:
        raise ValueError(f"pct3x3 must be in [0, 1], got {pct3x3}")
    if not 0.0 < squeeze_ratio <= 1.0:
        raise ValueError(f"squeeze_ratio must be in (0, 1], got {squeeze_ratio}")
    channels = []
    for i in range(num_fire):
        e = base_e + incr_e * (i // freq)
        e3 = int(round(e * pct3x3))
        s = max(1, int(round(e * squeeze_ratio)))
        channels.append((s, e - e3, e3))
    return channels


class SqueezeNet(nn.Module):
    """A stem conv, Fire modules with max-pools between them, and a 1x1-conv classifier.

    ``features`` holds conv1 (+BN) + activation, an optional max-pool, then the Fire modules
    with a max-pool after each index listed in ``pool_after`` (0-based Fire index: v1.0 pools
    after fire4 and fire8, i.e. indices 2 and 6). ``classifier`` is Dropout, conv10 (1x1 to
    ``num_classes``), activation (ReLU in the paper; Identity when ``classifier_act=False``) and
    global average pooling. ``fire_config`` overrides the metaparameters with explicit channel
    counts per Fire module (a channel-pruned model is rebuilt from it). ``expand3x3`` makes
    every Fire module's 3x3 expand branch a ``"standard"`` 3x3 conv, ``"factorized"`` (1x3 then
    3x1, Inception-v2), ``"flattened"`` (1-D filters) or ``"separable"`` (depthwise +
    pointwise): ``layers/spatial.py``. ``init``: one of ``INITS`` (module docstring).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.5,
        base_e: int = 128,
        incr_e: int = 128,
        freq: int = 2,
        pct3x3: float = 0.5,
        squeeze_ratio: float = 0.125,
        num_fire: int = 8,
        skip_fires: Sequence[int] = (),
        stem_channels: int = 96,
        stem_kernel: int = 7,
        stem_stride: int = 2,
        stem_padding: int = 0,
        stem_pool: bool = True,
        pool_after: Sequence[int] = (2, 6),
        pool_kernel: int = 3,
        pool_stride: int = 2,
        bypass: str = "none",
        batch_norm: bool = False,
        activation: str = "relu",
        classifier_act: bool = True,
        fire_config: Sequence[Sequence[int]] | None = None,
        expand3x3: str = "standard",
        init: str = "kaiming",
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        bad = [i for i in list(pool_after) + list(skip_fires) if not 0 <= i < num_fire]
        if bad:
            raise ValueError(f"Fire indices {bad} are outside 0..{num_fire - 1}")
        self.num_classes = num_classes

        def pool() -> nn.MaxPool2d:
            return nn.MaxPool2d(kernel_size=pool_kernel, stride=pool_stride, ceil_mode=True)

        layers: list[nn.Module] = [
            nn.Conv2d(
                in_chans, stem_channels, stem_kernel, stem_stride, stem_padding, bias=not batch_norm
            )
        ]
        if batch_norm:
            layers.append(nn.BatchNorm2d(stem_channels))
        layers.append(make_activation(activation))
        if stem_pool:
            layers.append(pool())
        channels = stem_channels
        if fire_config is not None:
            # Explicit (squeeze, expand1x1, expand3x3) per Fire module, e.g. after channel pruning.
            fires = [tuple(int(c) for c in f) for f in fire_config]
            if len(fires) != num_fire or any(len(f) != 3 or min(f) < 0 for f in fires):
                raise ValueError(
                    f"fire_config must list {num_fire} (squeeze, expand1x1, expand3x3) triples "
                    f"of non-negative ints, got {fire_config!r}"
                )
        else:
            fires = fire_channels(num_fire, base_e, incr_e, freq, pct3x3, squeeze_ratio)
        # Kept for channel pruning, which rebuilds the model from an edited fire_config.
        self.fire_config = [tuple(f) for f in fires]
        self.fire_indices = [i for i in range(num_fire) if i not in skip_fires]
        self.bypass_kind = bypass
        self.expand3x3_kind = expand3x3
        for i, (s, e1, e3) in enumerate(fires):
            if i not in skip_fires:
                # simple bypass only where the shapes allow it (fire3, 5, 7, 9 in v1.0);
                # complex bypass everywhere, a 1x1 conv where the channel counts differ.
                fire_bypass = bypass
                if bypass == "simple" and channels != e1 + e3:
                    fire_bypass = "none"
                layers.append(Fire(channels, s, e1, e3, batch_norm, activation, fire_bypass,
                                   expand3x3))
                channels = e1 + e3
            if i in pool_after:
                layers.append(pool())
        self.features = nn.Sequential(*layers)

        final_conv = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            final_conv,
            make_activation(activation) if classifier_act else nn.Identity(),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.init_kind = init
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                elif init == "kaiming":
                    nn.init.kaiming_uniform_(m.weight)  # torchvision's: variance 2 / fan_in
                else:
                    # Caffe's "xavier" filler, which the paper's released prototxt uses:
                    # uniform with variance 1 / fan_in, half of kaiming's (gain 1)
                    nn.init.kaiming_uniform_(m.weight, a=1.0)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.classifier(x)
        return torch.flatten(x, 1)


_V1_1 = dict(
    stem_channels=64, stem_kernel=3, stem_stride=2, base_e=128, incr_e=128, freq=2,
    pool_after=(1, 3),
)


@register_model(input_size=224)
def squeezenet(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5, **metaparams):
    """SqueezeNet built from the paper's metaparameters; the defaults are v1.0.

    Any of base_e, incr_e, freq, pct3x3, squeeze_ratio, the stem, the pools, bypass,
    batch_norm, activation, expand3x3 and fire_config may be overridden.
    """
    return SqueezeNet(num_classes=num_classes, in_chans=in_chans, dropout=dropout, **metaparams)


@register_model(input_size=224)
def squeezenet1_0(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5, **overrides):
    """SqueezeNet v1.0: 1,248,424 parameters at 1000 classes, torchvision's layout."""
    return SqueezeNet(num_classes=num_classes, in_chans=in_chans, dropout=dropout, **overrides)


@register_model(input_size=224)
def squeezenet1_1(num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5, **overrides):
    """SqueezeNet v1.1: 3x3/2 stem, earlier pools; 1,235,496 parameters, 2.4x fewer MACs."""
    kwargs = {**_V1_1, **overrides}
    return SqueezeNet(num_classes=num_classes, in_chans=in_chans, dropout=dropout, **kwargs)


@register_model(input_size=224)
def squeezenet1_0_simple_bypass(
    num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5, **overrides
):
    """SqueezeNet v1.0 with simple bypass around fire3/5/7/9 (no extra parameters)."""
    kwargs = {"bypass": "simple", **overrides}
    return SqueezeNet(num_classes=num_classes, in_chans=in_chans, dropout=dropout, **kwargs)


@register_model(input_size=224)
def squeezenet1_0_complex_bypass(
    num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5, **overrides
):
    """SqueezeNet v1.0 with complex bypass: identity or a 1x1 conv around every Fire module."""
    kwargs = {"bypass": "complex", **overrides}
    return SqueezeNet(num_classes=num_classes, in_chans=in_chans, dropout=dropout, **kwargs)


# --- The CIFAR-10 adaptations of the course study (counts at 10 classes) -------------------
# baseline: v1.0 unchanged (740,554). E1: pool kernel 3 -> 2, CIFAR preprocessing (740,554).
# E2: E1 + conv1 2x2/1 pad 1 (727,594). E3: E2 without fire3, dropout 0.3. E4: E2 with the
# stem pool removed and 2x2/2 pools after fire4 and fire8, so fire2-4 see 33x33 maps (727,594).
# E5: E4 at 100 classes (773,764).
_E1 = dict(pool_kernel=2, pool_stride=2)
_E2 = dict(_E1, stem_kernel=2, stem_stride=1, stem_padding=1)
_E4 = dict(_E2, stem_pool=False, pool_after=(2, 6))


# Training settings measured to train the course-study family (no BatchNorm, a ReLU on the
# logits), used where a run leaves them unset. AdamW at 2e-3 with a cosine decay is
# recipes/compress_squeezenet_v1_layout.yaml's (62% on CIFAR-10 in 20 epochs for the baseline);
# the warm-up is what keeps the logits alive: without one, Adam, AdamW and RMSprop at 1e-3 sent
# every logit below zero in the first steps and the model stayed at 10%, while one warm-up
# epoch avoided it (README, "The optimizer and activation studies";
# benchmarks/results/optimizer_study.json). Checked for E2 on 5,000 images, batch 64, 2 epochs
# (1,000 test images): these settings 15.8%, with a 0.5-epoch warm-up 20.3%, Adam at 1e-3 with
# one warm-up epoch 20.6%: all learn. (On 1,000 images every one of them stayed at 10%: too
# few warm-up steps.)
_COURSE_STUDY_TRAIN = dict(optimizer="adamw", lr=0.002, weight_decay=0.05, schedule="cosine",
                           warmup_epochs=1.0, label_smoothing=0.0)


def _course_study(num_classes: int = 10):
    """The registration every course-study model shares: 32x32 CIFAR, its training settings."""
    return register_model(input_size=32, num_classes=num_classes, tags=("cifar", "course-study"),
                          train_defaults=_COURSE_STUDY_TRAIN)


def _cifar_variant(defaults: dict, num_classes: int, in_chans: int, dropout: float, overrides):
    return SqueezeNet(
        num_classes=num_classes, in_chans=in_chans, dropout=dropout, **{**defaults, **overrides}
    )


@_course_study()
def squeezenet_cifar_baseline(num_classes=10, in_chans=3, dropout=0.5, **overrides):
    """Course study baseline: SqueezeNet v1.0 unchanged, on 32x32 CIFAR (740,554 at 10 classes)."""
    return _cifar_variant({}, num_classes, in_chans, dropout, overrides)


@_course_study()
def squeezenet_cifar_e1(num_classes=10, in_chans=3, dropout=0.5, **overrides):
    """Course study E1: max-pool kernel 3 -> 2 (740,554 at 10 classes)."""
    return _cifar_variant(_E1, num_classes, in_chans, dropout, overrides)


@_course_study()
def squeezenet_cifar_e2(num_classes=10, in_chans=3, dropout=0.5, **overrides):
    """Course study E2: E1 with conv1 7x7/2 -> 2x2/1 pad 1 (727,594 at 10 classes)."""
    return _cifar_variant(_E2, num_classes, in_chans, dropout, overrides)


@_course_study()
def squeezenet_cifar_e3(num_classes=10, in_chans=3, dropout=0.3, **overrides):
    """Course study E3: E2 without fire3, dropout 0.3 (715,162 at 10 classes).

    The study's table prints 715,169 parameters, but the layer arithmetic gives 715,162:
    E2's 727,594 minus fire3's 12,432 (squeeze 128*16+16, expand1x1 16*64+64,
    expand3x3 16*64*9+64). We report the true count.
    """
    return _cifar_variant(dict(_E2, skip_fires=(1,)), num_classes, in_chans, dropout, overrides)


@_course_study()
def squeezenet_cifar_e4(num_classes=10, in_chans=3, dropout=0.5, **overrides):
    """Course study E4: E2 with delayed downsampling, 33x33 maps through fire2-4 (727,594)."""
    return _cifar_variant(_E4, num_classes, in_chans, dropout, overrides)


@_course_study(num_classes=100)
def squeezenet_cifar_e5(num_classes=100, in_chans=3, dropout=0.5, **overrides):
    """Course study E5: E4 on CIFAR-100 (773,764 at 100 classes)."""
    return _cifar_variant(_E4, num_classes, in_chans, dropout, overrides)


# --- A strong modern CIFAR SqueezeNet: the default model for CIFAR runs -----------------------
_CIFAR_MODERN = dict(
    stem_channels=64, stem_kernel=3, stem_stride=1, stem_padding=1, stem_pool=True,
    pool_kernel=2, pool_stride=2, pool_after=(2, 6), bypass="simple", batch_norm=True,
    classifier_act=False,
)
# recipes/cifar10_fast.yaml's training settings (81% on CIFAR-10 in 7 epochs, 15 minutes on a
# 2-core CPU), used where a run leaves them unset. With the older built-in defaults instead
# (Nesterov at lr 0.1, no warm-up) a user's 2-epoch run on 10,000 images ended at 10.4%, its
# first-epoch training loss 4.3; on the tests' small variant (1,000 images, batch 32, 2
# epochs, seeds 0 and 1) those gave 12.7% and 9.3% (first-epoch loss 4.4 and 3.9), these 24.7%
# and 25.0% (loss 2.3).
_CIFAR_MODERN_TRAIN = dict(optimizer="adamw", lr=0.005, weight_decay=0.05, schedule="cosine",
                           warmup_epochs=0.3, label_smoothing=0.1)


@register_model(input_size=32, num_classes=10, tags=("cifar", "default"),
                train_defaults=_CIFAR_MODERN_TRAIN)
def squeezenet_cifar(num_classes=10, in_chans=3, dropout=0.1, **overrides):
    """Modern CIFAR SqueezeNet: 3x3 stem, BatchNorm, simple bypass; the default CIFAR model."""
    return _cifar_variant(_CIFAR_MODERN, num_classes, in_chans, dropout, overrides)


# the same layout as squeezenet_cifar, wider: its settings (not measured on this one yet)
@register_model(input_size=32, num_classes=10, tags=("cifar", "teacher"),
                train_defaults=_CIFAR_MODERN_TRAIN)
def squeezenet_cifar_wide(num_classes=10, in_chans=3, dropout=0.1, **overrides):
    """A wide CIFAR SqueezeNet (2x expand filters, squeeze ratio 0.25): a distillation teacher."""
    kwargs = dict(_CIFAR_MODERN, stem_channels=96, base_e=256, incr_e=256, squeeze_ratio=0.25)
    return _cifar_variant(kwargs, num_classes, in_chans, dropout, overrides)


def num_fire_modules(model: nn.Module) -> int:
    return sum(isinstance(m, Fire) for m in model.modules())


__all__ = ["SqueezeNet", "fire_channels", "num_fire_modules"]
