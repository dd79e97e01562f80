"""Training to a time budget (``time_budget`` seconds): the number of epochs a machine fits.

A recipe sized on one machine (``recipes/cifar10_15min.yaml``: 24 epochs in 12 minutes on a
2-core Xeon with AMX) takes three times as long on a 2-core CPU without native bf16. With a
budget the recipe's ``epochs`` become an upper bound: the first epoch is timed, and the run
keeps the largest count of epochs whose training, periodic scoring and final scoring fit in
what is left, then lays its learning-rate schedule over that count
(``optim.refit_scheduler_``), so a cosine still ends at zero when the budget does; the warm-up
keeps its share of the schedule (``budget_warmup``), so a long warm-up sized for many epochs
does not hold a slow machine at a low learning rate for all of its few. After every later
epoch the same estimate is made again from that epoch's time and the time spent, and the plan
is cut where it no longer fits: a virtual machine's speed can drop by a quarter within a run (a
15-minute run at 24/28/32 px on a 2-core AMD EPYC, 2026-12-07, timed its first epoch at 33.8 s
and its 32 px epochs at 83-88 s against the 64 s its timed steps said), and a budget is a
promise about the whole run. Where a slow spell passes, or the first estimate was too careful,
the plan grows again towards the recipe's epochs, one epoch a check, where that epoch fits with
another epoch's time to spare (a run at batch 256 cut to 14 epochs by checks that could only
cut ended 120 s under its budget, the results log).

The estimate: every epoch still to come costs what the last one did, and scoring the test set
costs a forward pass over it at the cost per image of a training step's forward pass (a third
of a step), once per test-time view, until a scoring has been measured. Under progressive
resizing the epochs at other sizes, and the scoring at the images' own size, are scaled by what
a training step costs at each size, timed on a real batch after the first epoch
(``step_seconds_by_size``): the pixel count is not a good enough guide, since smaller images
also fit the caches better (airbench_cifar at widths 32-64-128 on a 2-core AVX2 CPU: a 32 px
step costs 2.2x a 24 px one, for 1.8x the pixels and 1.9x the MACs; estimated from the pixels,
16 epochs at 24/28/32 px that took 800 s came to 636 s). What the run spent before its first
step (decoding data, the autotune) is not counted: a machine that has the data decoded already
starts sooner, and the budget is about training.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from squeezelab.train.autotune import time_steps
from squeezelab.train.config import TrainConfig
from squeezelab.train.fast_start import resize_batch, size_for_epoch

#: a forward pass costs about a third of a training step (forward + backward)
FORWARD_SHARE = 1.0 / 3.0


def budget_warmup(cfg: TrainConfig, epochs: int) -> float:
    """``cfg``'s warm-up for a run cut to ``epochs``: the same share of the schedule."""
    return cfg.warmup_epochs * epochs / cfg.epochs


@dataclass(frozen=True)
class BudgetFit:
    """What ``fit_epochs`` decided after epoch ``after_epoch``: ``epochs`` kept of ``asked``
    (the recipe's after the first epoch, the plan so far after a later one), from that
    epoch's ``epoch_seconds`` and ``eval_seconds`` per scoring of the test set, with
    ``estimated_seconds`` for the whole run (budget ``budget``)."""

    budget: float
    asked: int
    epochs: int
    epoch_seconds: float
    eval_seconds: float
    estimated_seconds: float
    #: seconds per training step at each size the estimate scaled by (None: the images' own
    #: size), where it was timed; None where every epoch and the scoring see one size
    step_seconds: dict[int | None, float] | None = None
    after_epoch: int = 1

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if self.step_seconds is not None:  # JSON keys are strings
            out["step_seconds"] = {("images" if k is None else str(k)): v
                                   for k, v in self.step_seconds.items()}
        return {**out, "cut_short": self.cut_short}

    @property
    def cut_short(self) -> bool:
        """Fewer than half the recipe's epochs fit: its stated accuracy is out of reach here."""
        return self.epochs < self.asked / 2

    def describe(self) -> str:
        if self.after_epoch > 1:  # a later check that changed the plan
            change = (f"{self.epochs} of the {self.asked} planned epochs fit"
                      if self.epochs < self.asked else
                      f"there is time for {self.epochs} epochs, not {self.asked}")
            return (f"time budget {self.budget:.0f} s: epoch {self.after_epoch} took "
                    f"{self.epoch_seconds:.1f} s, so {change} (about "
                    f"{self.estimated_seconds:.0f} s with scoring)")
        line = (f"time budget {self.budget:.0f} s: the first epoch took {self.epoch_seconds:.1f} "
                f"s, so {self.epochs} of {self.asked} epochs fit (about "
                f"{self.estimated_seconds:.0f} s with scoring)")
        if self.step_seconds:
            sized = {size: s for size, s in self.step_seconds.items() if size is not None}
            steps = [f"{s:.2f} s at {size} px" for size, s in sized.items()]
            if self.step_seconds[None] not in sized.values():  # else one of the sizes is theirs
                steps.append(f"{self.step_seconds[None]:.2f} s at the images' own size")
            line += f"; a training step takes {', '.join(steps)}"
        if self.cut_short:
            # a slow machine is better served by a smaller model trained for more epochs than
            # by the recipe's model trained for a few (the 15-minute recipe: 66-73% against 86-88%
            # on a CPU without native bf16, README), and the user should hear it before waiting
            line += ("\nnote: fewer than half the recipe's epochs fit on this machine, so expect "
                     "less than the accuracy it was sized for; a narrower model (fewer "
                     "MACs per image) trains more epochs in the same time")
        return line


def scoring_views(cfg: TrainConfig) -> int:
    """Forward passes per test image under the run's scoring: the flip doubles them,
    translation adds two shifted copies of each."""
    return (2 if cfg.test_time_flip else 1) * (3 if cfg.test_time_translate else 1)


def step_seconds_by_size(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                         precision: str, channels_last: bool, sizes: list[int],
                         rounds: int = 2) -> dict[int | None, float]:
    """Seconds per training step of ``model`` on the batch ``images`` as they are (key None:
    the size the test set is scored at) and resized to each of ``sizes``, as progressive
    resizing resizes them; timed on a copy of the model (``autotune.time_steps``), so the run's
    weights, statistics and random stream are untouched. Each size is timed once a round, the
    sizes in turn, and keeps its quickest: work that starts beside the run for a second or two
    (one size timed at twice its cost once set a 16-epoch plan to 7) then slows one timing of
    a size, not its estimate."""
    rng = torch.get_rng_state()  # a model with dropout draws from it
    own = tuple(images.shape[-2:])
    distinct = [None, *(s for s in dict.fromkeys(sizes) if (s, s) != own)]
    try:
        seconds: dict[int | None, float] = {}
        for _ in range(rounds):
            for size in distinct:
                timed = time_steps(model, resize_batch(images, size), labels, precision,
                                   channels_last, steps=1)
                seconds[size] = min(timed, seconds.get(size, timed))
    finally:
        torch.set_rng_state(rng)
    # a size equal to the images' own is the same step
    return {None: seconds[None], **{s: seconds[None if (s, s) == own else s]
                                    for s in dict.fromkeys(sizes)}}


def fit_epochs(cfg: TrainConfig, epoch_seconds: float, train_images: int, test_images: int,
               spent: float | None = None,
               step_seconds: dict[int | None, float] | None = None, done: int = 1,
               eval_seconds: float | None = None, most: int | None = None) -> BudgetFit:
    """The epochs of ``cfg`` (at most ``cfg.epochs``, at least ``done``) that fit in
    ``cfg.time_budget`` seconds, given that ``done`` epochs are trained, the last of them in
    ``epoch_seconds`` over ``train_images`` images, and ``spent`` seconds have gone so far
    (default: that epoch). The scoring of the test set (``test_images``, every
    ``cfg.eval_every`` epochs and after the last, the epoch just trained included) costs
    ``eval_seconds`` each where the run has measured it, else the estimate of the module
    docstring. With ``most`` (the recipe's epochs, for a later check) a plan that fits and has
    epochs left grows by one epoch where that one fits with an epoch's time to spare: one at a
    time, and with that margin, so that the plan does not swing with each epoch's noise.

    Under progressive resizing, ``step_seconds`` (``step_seconds_by_size``) scales each epoch,
    and the scoring at the images' own size (key None), by its step's cost against the last
    trained epoch's; without it the epochs scale by their pixel counts and the scoring is
    costed at that epoch's size."""
    if cfg.time_budget is None:
        raise ValueError("fit_epochs needs a config with a time_budget")
    if not 1 <= done <= cfg.epochs:
        raise ValueError(f"done must be in [1, epochs={cfg.epochs}], got {done}")
    spent = epoch_seconds if spent is None else spent
    sizes = cfg.progressive_sizes
    timed = size_for_epoch(sizes, done - 1, cfg.epochs)  # the size of the epoch timed

    def relative(size: int | None) -> float:
        """A step at ``size`` (None: the images' own) against one at the timed epoch's."""
        if timed is None or size == timed:
            return 1.0
        if step_seconds is not None:
            return step_seconds[size] / step_seconds[timed]
        return 1.0 if size is None else (size / timed) ** 2

    if eval_seconds is None:
        per_image = epoch_seconds / max(1, train_images)
        eval_seconds = (per_image * FORWARD_SHARE * test_images * scoring_views(cfg)
                        * relative(None))

    def cost(epochs: int) -> float:
        # the epochs after ``done`` at the sizes a run of ``epochs`` gives them; the scorings
        # from the epoch just trained (not scored yet) to the last, which always is
        later = sum(relative(size_for_epoch(sizes, e, epochs)) for e in range(done, epochs))
        evals = sum(1 for e in range(done, epochs + 1) if e % cfg.eval_every == 0 or e == epochs)
        return spent + epoch_seconds * later + eval_seconds * evals

    epochs = cfg.epochs
    while epochs > done and cost(epochs) > cfg.time_budget:
        epochs -= 1
    if (epochs == cfg.epochs and most is not None and done < epochs < most
            and cost(epochs + 1) + epoch_seconds <= cfg.time_budget):
        epochs += 1
    return BudgetFit(budget=float(cfg.time_budget), asked=cfg.epochs, epochs=epochs,
                     epoch_seconds=epoch_seconds, eval_seconds=eval_seconds,
                     estimated_seconds=cost(epochs), step_seconds=step_seconds,
                     after_epoch=done)


@dataclass
class BudgetChecks:
    """A run's time budget from epoch to epoch: the fits that set or changed its plan (each
    ``BudgetFit.to_dict``), the steps timed at each progressive size, and the seconds that
    timing took (counted against the budget). ``record`` is what ``time_budget.json`` holds;
    ``from_record`` reads it back for a resumed run, which goes on with the same timings."""

    fits: list[dict[str, Any]] = field(default_factory=list)
    step_seconds: dict[int | None, float] | None = None
    overhead: float = 0.0

    def check(self, cfg: TrainConfig, epoch_seconds: float, epoch: int,
              history: list[dict[str, Any]], train_images: int, test_images: int,
              time_sizes: Callable[[], dict[int | None, float]]) -> BudgetFit:
        """``fit_epochs`` after 0-based ``epoch`` (trained in ``epoch_seconds``, the epochs
        before it in ``history``): after the first, the recipe's epochs, timing the
        progressive sizes with ``time_sizes``; after a later one, the plan, which may grow
        towards the first fit's ``asked``."""
        first = epoch == 0
        if first and cfg.progressive_sizes:
            t0 = time.perf_counter()
            self.step_seconds = time_sizes()
            self.overhead = time.perf_counter() - t0
        spent = epoch_seconds + self.overhead + sum(
            x["seconds"] + x.get("eval_seconds", 0.0) for x in history)
        scored = [x["eval_seconds"] for x in history if "eval_seconds" in x]
        return fit_epochs(cfg, epoch_seconds, train_images, test_images, spent=spent,
                          step_seconds=self.step_seconds, done=epoch + 1,
                          eval_seconds=sum(scored) / len(scored) if scored else None,
                          most=None if first or not self.fits else self.fits[0]["asked"])

    def record(self, epochs: int) -> dict[str, Any]:
        """The first fit with the epochs planned now, and the later fits that changed the
        plan, in order, as ``changes``."""
        return {**self.fits[0], "epochs": epochs, "changes": self.fits[1:]}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> BudgetChecks:
        steps = record.get("step_seconds")
        return cls(fits=[{k: v for k, v in record.items() if k != "changes"},
                         *record.get("changes", [])],
                   step_seconds={None if k == "images" else int(k): float(v)
                                 for k, v in steps.items()} if steps else None)


__all__ = ["BudgetChecks", "BudgetFit", "fit_epochs", "scoring_views", "step_seconds_by_size"]
