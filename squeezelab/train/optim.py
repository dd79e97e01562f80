"""Optimizers and learning-rate schedules by name.

Optimizers: SGD, SGD with momentum, Nesterov, Adam, AdamW, RMSprop, and Perturbed Gradient
Descent (Jin et al. 2017, arXiv 1703.00887; the noise is added by ``PerturbedGradientHook``).
Schedules, applied per optimizer step: constant, step decay, cosine, linear-to-zero (the
SqueezeNet paper's "poly" schedule with power 1), cosine with warm restarts (SGDR, Loshchilov &
Hutter, arXiv 1608.03983); each with an optional linear warm-up. The warm-up may start above
zero (``warmup_start_factor``) and linear / cosine may end above it (``final_lr_factor``):
airbench94's triangle is linear from 0.2 to 0.07 of the peak.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from squeezelab.train.config import TrainConfig


def build_optimizer(params: Iterable, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names, with lr, momentum and weight decay from ``cfg``."""
    params = list(params)
    name = cfg.optimizer
    if name == "sgd" or name == "pgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.0, weight_decay=cfg.weight_decay)
    if name == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if name == "nesterov":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                               weight_decay=cfg.weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr after ``step`` optimizer steps (0-based)."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        start = cfg.warmup_start_factor
        return start + (1.0 - start) * (step + 1) / warmup
    # progress through the post-warm-up part of the run, in [0, 1)
    t = (step - warmup) / max(1, total_steps - warmup)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** ((step // steps_per_epoch) // cfg.step_epochs)
    if cfg.schedule in ("cosine", "linear"):  # from 1 down to final_lr_factor
        decay = 0.5 * (1.0 + math.cos(math.pi * t)) if cfg.schedule == "cosine" else 1.0 - t
        return cfg.final_lr_factor + (1.0 - cfg.final_lr_factor) * decay
    if cfg.schedule == "cosine_restarts":
        cycle = cfg.restart_epochs * steps_per_epoch
        pos = step - warmup
        while pos >= cycle:  # SGDR: cycles of length T_0, T_0 * T_mult, ...
            pos -= cycle
            cycle *= cfg.restart_mult
        return 0.5 * (1.0 + math.cos(math.pi * pos / cycle))
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def schedule_function(cfg: TrainConfig, steps_per_epoch: int):
    """step -> lr multiplier of ``cfg.schedule`` over ``cfg.epochs`` (a plain function: a
    LambdaLR saves no state of its lr functions, so checkpoints stay JSON)."""
    total = cfg.epochs * steps_per_epoch

    def factor(step: int) -> float:
        return lr_factor(step, total, steps_per_epoch, cfg)

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following ``cfg.schedule`` over ``cfg.epochs``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_function(cfg, steps_per_epoch))


def refit_scheduler_(scheduler: torch.optim.lr_scheduler.LambdaLR, cfg: TrainConfig,
                     steps_per_epoch: int) -> None:
    """Lay ``build_scheduler``'s schedule again over ``cfg`` (fewer epochs, say) from the
    current step: the run's own lr function is replaced wherever a group follows it (hooks
    that add a group, such as architecture learning's gates, share it), and the groups' rates
    are set for the current step."""
    old = scheduler.lr_lambdas[0]
    new = schedule_function(cfg, steps_per_epoch)
    scheduler.lr_lambdas = [new if f is old else f for f in scheduler.lr_lambdas]
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs,
                                   scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
