"""Training to a time budget (``time_budget`` seconds): the number of epochs a machine fits.

A recipe sized on one machine (``recipes/cifar10_15min.yaml``: 24 epochs in 12 minutes on a
2-core Xeon with AMX) takes three times as long on a 2-core CPU without native bf16. With a
budget the recipe's ``epochs`` become an upper bound: the first epoch is timed, and the run
keeps the largest count of epochs whose training, periodic scoring and final scoring fit in
what is left, then lays its learning-rate schedule over that count
(``optim.refit_scheduler_``), so a cosine still ends at zero when the budget does; the warm-up
keeps its share of the schedule (``budget_warmup``), so a long warm-up sized for many epochs
does not hold a slow machine at a low learning rate for all of its few.

The estimate: every later epoch costs what the first did (scaled by the pixel count under
progressive resizing), and scoring the test set costs a forward pass over it at the cost per
image of a training step's forward pass (a third of a step), once per test-time view. What the
run spent before its first step (decoding data, the autotune) is not counted: a machine that
has the data decoded already starts sooner, and the budget is about training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from squeezelab.train.config import TrainConfig
from squeezelab.train.fast_start import size_for_epoch

#: a forward pass costs about a third of a training step (forward + backward)
FORWARD_SHARE = 1.0 / 3.0


def budget_warmup(cfg: TrainConfig, epochs: int) -> float:
    """``cfg``'s warm-up for a run cut to ``epochs``: the same share of the schedule."""
    return cfg.warmup_epochs * epochs / cfg.epochs


@dataclass(frozen=True)
class BudgetFit:
    """What ``fit_epochs`` decided: ``epochs`` kept of ``asked``, from the first epoch's
    ``epoch_seconds`` and an estimated ``eval_seconds`` per scoring of the test set, with
    ``estimated_seconds`` for the whole run (budget ``budget``)."""

    budget: float
    asked: int
    epochs: int
    epoch_seconds: float
    eval_seconds: float
    estimated_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__},
                "cut_short": self.cut_short}

    @property
    def cut_short(self) -> bool:
        """Fewer than half the recipe's epochs fit: its stated accuracy is out of reach here."""
        return self.epochs < self.asked / 2

    def describe(self) -> str:
        line = (f"time budget {self.budget:.0f} s: the first epoch took {self.epoch_seconds:.1f} "
                f"s, so {self.epochs} of {self.asked} epochs fit (about "
                f"{self.estimated_seconds:.0f} s with scoring)")
        if self.cut_short:
            # a slow machine is better served by a smaller model trained for more epochs than
            # by the recipe's model trained for a few (the 15-minute recipe: 66-73% against 86%
            # on a CPU without native bf16, README), and the user should hear it before waiting
            line += ("\nnote: fewer than half the recipe's epochs fit on this machine, so expect "
                     "less than the accuracy it was sized for; a narrower model (fewer "
                     "MACs per image) trains more epochs in the same time")
        return line


def scoring_views(cfg: TrainConfig) -> int:
    """Forward passes per test image under the run's scoring: the flip doubles them,
    translation adds two shifted copies of each."""
    return (2 if cfg.test_time_flip else 1) * (3 if cfg.test_time_translate else 1)


def fit_epochs(cfg: TrainConfig, epoch_seconds: float, train_images: int, test_images: int,
               spent: float | None = None) -> BudgetFit:
    """The epochs of ``cfg`` (at most ``cfg.epochs``, at least one) that fit
    in ``cfg.time_budget`` seconds, given that the first epoch's training took
    ``epoch_seconds`` over ``train_images`` images and ``spent`` seconds have gone so far
    (default: that epoch). The scoring of the test set (``test_images``, every
    ``cfg.eval_every`` epochs and after the last) is estimated as the module docstring says."""
    if cfg.time_budget is None:
        raise ValueError("fit_epochs needs a config with a time_budget")
    spent = epoch_seconds if spent is None else spent
    per_image = epoch_seconds / max(1, train_images)
    eval_seconds = per_image * FORWARD_SHARE * test_images * scoring_views(cfg)

    def cost(epochs: int) -> float:
        sizes = cfg.progressive_sizes
        first = size_for_epoch(sizes, 0, epochs)
        scale = [1.0 if first is None else (size_for_epoch(sizes, e, epochs) / first) ** 2
                 for e in range(epochs)]
        # epoch 1 is trained already (at its own size), none of it scored yet; the last epoch
        # is always scored
        evals = sum(1 for e in range(1, epochs + 1) if e % cfg.eval_every == 0 or e == epochs)
        return spent + epoch_seconds * sum(scale[1:]) + eval_seconds * evals

    epochs = cfg.epochs
    while epochs > 1 and cost(epochs) > cfg.time_budget:
        epochs -= 1
    return BudgetFit(budget=float(cfg.time_budget), asked=cfg.epochs, epochs=epochs,
                     epoch_seconds=epoch_seconds, eval_seconds=eval_seconds,
                     estimated_seconds=cost(epochs))


__all__ = ["BudgetFit", "fit_epochs", "scoring_views"]
