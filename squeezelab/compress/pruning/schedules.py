"""Pruning schedules: iterative prune -> retrain rounds (Han et al. 2015, arXiv 1506.02626) and
the gradual cubic schedule of Zhu & Gupta 2017 ("To prune, or not to prune", arXiv 1710.01878).

Each schedule is a plain function giving the target sparsity (fraction pruned, 0..1) and a
``TrainHook`` built on ``MaskHook`` that raises the sparsity at the right epoch / step by
re-computing magnitude masks among the still-kept weights. With per-layer rules, every layer
follows the schedule toward its own final target (``PruneConfig.map_sparsity``).
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from squeezelab.compress.pruning.magnitude import (
    PruneConfig,
    _check_sparsity,
    compute_masks,
)
from squeezelab.compress.pruning.masks import MaskHook
from squeezelab.hooks import TrainState

ITERATIVE_KINDS = ("geometric", "linear")
#: what a prune -> retrain pipeline may follow: rounds of an iterative kind, or "gradual" (one
#: run along Zhu & Gupta's cubic curve, ``EpochGradualPruneHook``)
PRUNE_SCHEDULES = (*ITERATIVE_KINDS, "gradual")


def iterative_sparsities(
    final_sparsity: float, num_rounds: int, kind: str = "geometric"
) -> list[float]:
    """Sparsity after each of ``num_rounds`` prune -> retrain rounds, ending at final_sparsity.

    "linear": s_r = s_f r / n. "geometric": each round prunes the same fraction of the weights
    still kept, so the kept fraction is (1 - s_f)^(r/n) and s_r = 1 - (1 - s_f)^(r/n).
    """
    final_sparsity = _check_sparsity(final_sparsity, "final_sparsity")
    if not isinstance(num_rounds, int) or num_rounds < 1:
        raise ValueError(f"num_rounds must be a positive integer, got {num_rounds!r}")
    if kind == "linear":
        return [final_sparsity * r / num_rounds for r in range(1, num_rounds)] + [final_sparsity]
    if kind == "geometric":
        kept = 1.0 - final_sparsity
        return [1.0 - kept ** (r / num_rounds) for r in range(1, num_rounds)] + [final_sparsity]
    raise ValueError(f"kind must be one of {ITERATIVE_KINDS}, got {kind!r}")


def _check_cubic(final_sparsity, initial_sparsity, begin_step, num_prunes, frequency) -> None:
    _check_sparsity(final_sparsity, "final_sparsity")
    _check_sparsity(initial_sparsity, "initial_sparsity")
    if initial_sparsity > final_sparsity:
        raise ValueError(f"initial_sparsity {initial_sparsity} exceeds final_sparsity "
                         f"{final_sparsity}")
    for what, value, low in (("begin_step", begin_step, 0), ("num_prunes", num_prunes, 1),
                             ("frequency", frequency, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")


def cubic_stage(step: int, begin_step: int, num_prunes: int, frequency: int) -> int:
    """Pruning updates done by ``step``: -1 before begin_step, then floor((t - t0) / dt),
    capped at num_prunes."""
    if step < begin_step:
        return -1
    return min((step - begin_step) // frequency, num_prunes)


def cubic_sparsity(
    step: int,
    final_sparsity: float,
    initial_sparsity: float = 0.0,
    begin_step: int = 0,
    num_prunes: int = 10,
    frequency: int = 1,
) -> float:
    """Zhu & Gupta's target sparsity at optimizer step ``step``.

    s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3 for t = t0, t0 + dt, ..., t0 + n dt,
    held constant between updates and at s_f after t0 + n dt. Before t0 pruning has not begun:
    0.0. t0 = begin_step, n = num_prunes, dt = frequency (all in optimizer steps).
    """
    _check_cubic(final_sparsity, initial_sparsity, begin_step, num_prunes, frequency)
    stage = cubic_stage(step, begin_step, num_prunes, frequency)
    if stage < 0:
        return 0.0
    return final_sparsity + (initial_sparsity - final_sparsity) * (1 - stage / num_prunes) ** 3


class IterativePruneHook(MaskHook):
    """Iterative pruning: at the start of each epoch in ``prune_epochs`` the next round prunes
    to ``iterative_sparsities(target, len(prune_epochs), kind)[round]`` for every layer's
    target in ``config``; the masks then hold while the following epochs retrain."""

    def __init__(self, config: PruneConfig, prune_epochs: Sequence[int], kind: str = "geometric"):
        super().__init__()
        epochs = [int(e) for e in prune_epochs]
        if not epochs or epochs != sorted(set(epochs)) or epochs[0] < 0:
            raise ValueError(f"prune_epochs must be increasing, non-negative epoch indices, got "
                             f"{list(prune_epochs)}")
        iterative_sparsities(0.5, len(epochs), kind)  # validates kind
        self.config = config
        self.prune_epochs = epochs
        self.kind = kind
        self.rounds_done = 0

    def round_config(self, round_index: int) -> PruneConfig:
        """The config of round ``round_index`` (0-based): every target scaled by the schedule."""
        n = len(self.prune_epochs)
        return self.config.map_sparsity(
            lambda s: iterative_sparsities(s, n, self.kind)[round_index]
        )

    def on_epoch_start(self, state: TrainState) -> None:
        # Rounds due by this epoch; counting them (not matching one epoch) makes resume exact.
        due = bisect.bisect_right(self.prune_epochs, state.epoch)
        if due > self.rounds_done:
            self.set_masks(compute_masks(state.model, self.round_config(due - 1), self.masks))
            self.rounds_done = due

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        super().on_epoch_end(state, metrics)
        metrics["prune_round"] = self.rounds_done

    def state_dict(self) -> dict[str, Any]:
        return {"rounds_done": self.rounds_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rounds_done = int(state.get("rounds_done", 0))


class GradualPruneHook(MaskHook):
    """Zhu & Gupta's gradual pruning: every ``frequency`` optimizer steps from ``begin_step``,
    ``num_prunes`` times, each layer's sparsity rises along the cubic curve from
    min(initial_sparsity, its target) to its target in ``config``."""

    def __init__(
        self,
        config: PruneConfig,
        begin_step: int = 0,
        num_prunes: int = 10,
        frequency: int = 100,
        initial_sparsity: float = 0.0,
    ):
        super().__init__()
        _check_cubic(0.99, initial_sparsity, begin_step, num_prunes, frequency)
        self.config = config
        self.begin_step = begin_step
        self.num_prunes = num_prunes
        self.frequency = frequency
        self.initial_sparsity = initial_sparsity
        self.stage = -1  # pruning updates applied so far - 1 (-1: none)

    def stage_config(self, step: int) -> PruneConfig:
        """The config in force at ``step``: each target s_f mapped to cubic_sparsity(step, s_f)."""
        return self.config.map_sparsity(lambda s: cubic_sparsity(
            step, s, min(self.initial_sparsity, s), self.begin_step, self.num_prunes,
            self.frequency,
        ))

    def _update(self, state: TrainState) -> None:
        stage = cubic_stage(state.step, self.begin_step, self.num_prunes, self.frequency)
        if stage > self.stage:
            self.set_masks(compute_masks(state.model, self.stage_config(state.step), self.masks))
            self.stage = stage

    def on_train_start(self, state: TrainState) -> None:
        super().on_train_start(state)
        self._update(state)

    def after_step(self, state: TrainState) -> None:
        self._update(state)  # set_masks enforces at once when the stage changed
        super().after_step(state)

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage = int(state.get("stage", -1))


class EpochGradualPruneHook(GradualPruneHook):
    """Gradual pruning sized in epochs: the cubic curve rises from the run's first step over
    ``ramp_epochs`` epochs, ``updates_per_epoch`` mask updates in each, so the rest of the run
    trains at the final sparsity. The step counts come from the run itself when it starts
    (``state.steps_per_epoch``), and again identically on resume."""

    def __init__(self, config: PruneConfig, ramp_epochs: float, updates_per_epoch: int = 4,
                 initial_sparsity: float = 0.0):
        if isinstance(ramp_epochs, bool) or not isinstance(ramp_epochs, (int, float)) \
                or not ramp_epochs > 0:
            raise ValueError(f"ramp_epochs must be a number > 0, got {ramp_epochs!r}")
        if isinstance(updates_per_epoch, bool) or not isinstance(updates_per_epoch, int) \
                or updates_per_epoch < 1:
            raise ValueError(f"updates_per_epoch must be an integer >= 1, got "
                             f"{updates_per_epoch!r}")
        super().__init__(config, initial_sparsity=initial_sparsity)
        self.ramp_epochs = float(ramp_epochs)
        self.updates_per_epoch = updates_per_epoch

    def on_train_start(self, state: TrainState) -> None:
        steps = max(1, int(state.steps_per_epoch))
        self.frequency = max(1, steps // self.updates_per_epoch)
        self.num_prunes = max(1, round(self.ramp_epochs * steps / self.frequency))
        super().on_train_start(state)


__all__ = [
    "EpochGradualPruneHook", "GradualPruneHook", "IterativePruneHook", "PRUNE_SCHEDULES",
    "cubic_sparsity", "cubic_stage", "iterative_sparsities",
]
