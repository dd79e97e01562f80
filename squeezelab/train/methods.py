"""Hooks a config switches on by itself: ``train()`` prepends ``default_hooks(cfg)`` to the
caller's hooks, so a method selected in the config (``optimizer: pgd``) needs no ``if`` inside
the loop and no flag at each call site.
"""
from __future__ import annotations

from collections.abc import Sequence

from squeezelab.hooks import TrainHook
from squeezelab.train.config import TrainConfig


def default_hooks(cfg: TrainConfig, given: Sequence[TrainHook] = ()) -> list[TrainHook]:
    """The hooks ``cfg`` implies, leaving out any whose name a ``given`` hook already has.

    ``optimizer: pgd`` -> ``PerturbedGradientHook(cfg.pgd_radius, cfg.pgd_threshold,
    cfg.pgd_interval, seed=cfg.seed)`` (Jin et al. 2017, arXiv 1703.00887): the optimizer is
    plain SGD, the perturbation is the hook. ``l1_weight`` / ``group_lasso_weight`` > 0 ->
    ``L1Regularizer`` / ``GroupLassoRegularizer`` (train/regularizers.py) on every
    Conv2d/Linear weight; ``bn_l1_weight`` > 0 -> ``BatchNormL1Regularizer`` on every
    BatchNorm scale; ``binarize_weight`` > 0 -> ``BinarizeRegularizer(cfg.binarize_weight,
    cfg.binarize_scale)`` on every Conv2d/Linear weight but the first and last;
    ``lookahead_steps`` > 0 -> ``LookaheadHook`` (train/lookahead.py); ``ema_decay`` > 0 ->
    ``WeightAverageHook`` (train/weight_average.py), after it: the average is of the weights
    Lookahead leaves.
    """
    taken = {h.name for h in given}
    hooks: list[TrainHook] = []
    if cfg.optimizer == "pgd" and "pgd" not in taken:
        from squeezelab.train.pgd import PerturbedGradientHook

        hooks.append(PerturbedGradientHook(cfg.pgd_radius, cfg.pgd_threshold,
                                           getattr(cfg, "pgd_interval", 10), seed=cfg.seed))
    if cfg.l1_weight > 0 and "l1" not in taken:
        from squeezelab.train.regularizers import L1Regularizer

        hooks.append(L1Regularizer(cfg.l1_weight))
    if cfg.group_lasso_weight > 0 and "group_lasso" not in taken:
        from squeezelab.train.regularizers import GroupLassoRegularizer

        hooks.append(GroupLassoRegularizer(cfg.group_lasso_weight, cfg.group_lasso_groups))
    if cfg.bn_l1_weight > 0 and "bn_l1" not in taken:
        from squeezelab.train.regularizers import BatchNormL1Regularizer

        hooks.append(BatchNormL1Regularizer(cfg.bn_l1_weight))
    if cfg.binarize_weight > 0 and "binarize" not in taken:
        from squeezelab.train.regularizers import BinarizeRegularizer

        hooks.append(BinarizeRegularizer(cfg.binarize_weight, cfg.binarize_scale))
    if cfg.lookahead_steps > 0 and "lookahead" not in taken:
        from squeezelab.train.lookahead import LookaheadHook

        hooks.append(LookaheadHook(cfg.lookahead_steps, cfg.lookahead_alpha))
    if cfg.ema_decay > 0 and "ema" not in taken:
        from squeezelab.train.weight_average import WeightAverageHook

        hooks.append(WeightAverageHook(cfg.ema_decay))
    return hooks


__all__ = ["default_hooks"]
