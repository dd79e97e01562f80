"""Per-layer training settings of a run, airbench94's (Jordan 2024, arXiv 2404.00498,
section 3): how its BatchNorms keep their running statistics, which weights stay as they
started, and which parameters take a larger learning rate.

- ``bn_momentum``: every BatchNorm's running-statistics momentum, PyTorch's convention (the
  weight of the new batch: 0.1 is PyTorch's default; airbench's "0.6" is 0.4 here). Few, large
  steps want statistics that follow the weights closely.
- ``freeze_bn_scale``: every BatchNorm's scale stays at 1, so what enters each activation keeps
  unit variance per channel; the network gives up a per-channel gain that airbench found it
  does not need at its lengths, and the convolutions before the BatchNorms, whose scale the
  normalisation removes, set their effective step size through their own norm alone.
- ``freeze_stem``: the first convolution's weights stay as initialised (the whitening filters
  of ``stem_init: whitening``, which a large learning rate would otherwise wash out); its
  bias still trains.
- ``norm_lr_scale``: the BatchNorms' shifts (biases) train at this many times the learning
  rate (airbench's bias scaler, 64). Their weight decay per step stays what the other
  parameters' is: the group's decay coefficient is divided by the same factor, which keeps
  lr x decay fixed under SGD's coupled and AdamW's decoupled decay alike.
"""
from __future__ import annotations

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from squeezelab.config import ConfigError
from squeezelab.train.config import TrainConfig
from squeezelab.train.fast_start import stem_conv


def batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm (1d, 2d, 3d, synchronised) of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def apply_layer_settings_(model: nn.Module, cfg: TrainConfig) -> None:
    """Set ``cfg``'s BatchNorm momentum and freeze the weights it names, in place. A key that
    needs BatchNorms on a model without any is a ConfigError naming the key."""
    norms = batchnorms(model)
    needs_norms = [name for name, on in (("bn_momentum", cfg.bn_momentum is not None),
                                         ("freeze_bn_scale", cfg.freeze_bn_scale),
                                         ("norm_lr_scale", cfg.norm_lr_scale != 1.0)) if on]
    if needs_norms and not norms:
        raise ConfigError(f"{', '.join(needs_norms)} set, but model {cfg.model!r} has no "
                          "BatchNorm layer")
    for norm in norms:
        if cfg.bn_momentum is not None:
            norm.momentum = cfg.bn_momentum
        if cfg.freeze_bn_scale:
            if norm.weight is None:
                raise ConfigError(f"freeze_bn_scale: a BatchNorm of model {cfg.model!r} has "
                                  "no scale (affine=False)")
            norm.weight.requires_grad_(False)
    if cfg.freeze_stem:
        stem_conv(model).weight.requires_grad_(False)


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[nn.Parameter] | list[dict]:
    """What the optimizer is built over: all of ``model``'s parameters (a frozen one gets no
    gradient, so no step and no decay), or, under ``norm_lr_scale``, two groups: everything
    but the BatchNorm shifts, then the shifts at ``norm_lr_scale`` times the learning rate and
    ``1 / norm_lr_scale`` times the decay coefficient. The grouping is the same on every
    build, so a resumed run's saved optimizer state fits it."""
    params = list(model.parameters())
    if cfg.norm_lr_scale == 1.0:
        return params
    shifts = [n.bias for n in batchnorms(model) if n.bias is not None]
    shift_ids = {id(p) for p in shifts}
    return [dict(params=[p for p in params if id(p) not in shift_ids]),
            dict(params=shifts, lr=cfg.lr * cfg.norm_lr_scale,
                 weight_decay=cfg.weight_decay / cfg.norm_lr_scale)]


__all__ = ["apply_layer_settings_", "batchnorms", "parameter_groups"]
