"""Hooks a config switches on by itself: ``train()`` prepends ``default_hooks(cfg)`` to the
caller's hooks, so a method selected in the config (``optimizer: pgd``) needs no ``if`` inside
the loop and no flag at each call site.

Each such method is one entry of ``CONFIG_METHODS``, made by decorating its hook factory with
``@config_method(name, applies)``: ``name`` is the hook's ``name`` (a given hook of that name
replaces it), ``applies(cfg)`` says whether the config switches it on, and the factory builds
the hook from the config, importing its module lazily. Hooks come in registration order.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from squeezelab.hooks import TrainHook
from squeezelab.train.config import TrainConfig


@dataclass(frozen=True)
class ConfigMethod:
    """A training method a ``TrainConfig`` switches on: its hook's name, whether ``cfg``
    switches it on, and how its hook is built from ``cfg``."""

    name: str
    applies: Callable[[TrainConfig], bool]
    build: Callable[[TrainConfig], TrainHook]


#: Every method a config can switch on, in the order their hooks run.
CONFIG_METHODS: list[ConfigMethod] = []


def config_method(name: str, applies: Callable[[TrainConfig], bool]
                  ) -> Callable[[Callable[[TrainConfig], TrainHook]],
                                Callable[[TrainConfig], TrainHook]]:
    """Register the decorated ``factory(cfg) -> TrainHook`` as the hook named ``name`` that
    ``default_hooks`` adds when ``applies(cfg)``; after every method registered before it."""
    def register(factory: Callable[[TrainConfig], TrainHook]) -> Callable[[TrainConfig], TrainHook]:
        if any(m.name == name for m in CONFIG_METHODS):
            raise ValueError(f"a config method named {name!r} is already registered")
        CONFIG_METHODS.append(ConfigMethod(name, applies, factory))
        return factory
    return register


def default_hooks(cfg: TrainConfig, given: Sequence[TrainHook] = ()) -> list[TrainHook]:
    """The hooks ``cfg`` implies (``CONFIG_METHODS`` whose ``applies(cfg)``, in registration
    order), leaving out any whose name a ``given`` hook already has."""
    taken = {h.name for h in given}
    return [m.build(cfg) for m in CONFIG_METHODS if m.name not in taken and m.applies(cfg)]


@config_method("pgd", lambda cfg: cfg.optimizer == "pgd")
def _pgd(cfg: TrainConfig) -> TrainHook:
    """``optimizer: pgd``: perturbed gradient descent (Jin et al. 2017, arXiv 1703.00887); the
    optimizer is plain SGD, the perturbation is the hook."""
    from squeezelab.train.pgd import PerturbedGradientHook

    return PerturbedGradientHook(cfg.pgd_radius, cfg.pgd_threshold,
                                 getattr(cfg, "pgd_interval", 10), seed=cfg.seed)


@config_method("l1", lambda cfg: cfg.l1_weight > 0)
def _l1(cfg: TrainConfig) -> TrainHook:
    """``l1_weight`` > 0: L1 on every Conv2d/Linear weight (train/regularizers.py)."""
    from squeezelab.train.regularizers import L1Regularizer

    return L1Regularizer(cfg.l1_weight)


@config_method("group_lasso", lambda cfg: cfg.group_lasso_weight > 0)
def _group_lasso(cfg: TrainConfig) -> TrainHook:
    """``group_lasso_weight`` > 0: group lasso on every Conv2d/Linear weight, in groups of
    ``group_lasso_groups``."""
    from squeezelab.train.regularizers import GroupLassoRegularizer

    return GroupLassoRegularizer(cfg.group_lasso_weight, cfg.group_lasso_groups)


@config_method("bn_l1", lambda cfg: cfg.bn_l1_weight > 0)
def _bn_l1(cfg: TrainConfig) -> TrainHook:
    """``bn_l1_weight`` > 0: L1 on every BatchNorm scale."""
    from squeezelab.train.regularizers import BatchNormL1Regularizer

    return BatchNormL1Regularizer(cfg.bn_l1_weight)


@config_method("binarize", lambda cfg: cfg.binarize_weight > 0)
def _binarize(cfg: TrainConfig) -> TrainHook:
    """``binarize_weight`` > 0: toward binary weights, on every Conv2d/Linear weight but the
    first and last."""
    from squeezelab.train.regularizers import BinarizeRegularizer

    return BinarizeRegularizer(cfg.binarize_weight, cfg.binarize_scale)


@config_method("lookahead", lambda cfg: cfg.lookahead_steps > 0)
def _lookahead(cfg: TrainConfig) -> TrainHook:
    """``lookahead_steps`` > 0: Lookahead (train/lookahead.py)."""
    from squeezelab.train.lookahead import LookaheadHook

    return LookaheadHook(cfg.lookahead_steps, cfg.lookahead_alpha, cfg.lookahead_ramp)


@config_method("ema", lambda cfg: cfg.ema_decay > 0)
def _ema(cfg: TrainConfig) -> TrainHook:
    """``ema_decay`` > 0: the weight average (train/weight_average.py); registered after
    Lookahead, since the average is of the weights Lookahead leaves."""
    from squeezelab.train.weight_average import WeightAverageHook

    return WeightAverageHook(cfg.ema_decay)


__all__ = ["CONFIG_METHODS", "ConfigMethod", "config_method", "default_hooks"]
