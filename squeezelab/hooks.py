"""Training hooks: how pruning masks, DSD phases, distillation and regularisers plug into the one
training loop without ``if`` ladders inside it.

The loop calls, in order, for every hook in the list:

    on_train_start(state)                      once, after model/optimizer exist (and resume)
    on_epoch_start(state)                      every epoch
        loss = hook.loss(state, images, labels, logits, loss)   every step, may add terms
        after_backward(state)                  every step: gradients exist, before clipping/step
        after_step(state)                      every step: after optimizer.step()
    on_epoch_end(state, metrics)               may add entries to the epoch's metrics dict
    on_train_end(state)

``state_tensors``/``load_state_tensors`` and ``state_dict``/``load_state_dict`` let a hook save
what it needs to resume (masks, phase) inside the run's checkpoint; ``describe`` is the hook's
entry on the ``methods`` line a run prints before its first step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn


@dataclass
class TrainState:
    """What a hook can see and change. ``model`` is the unwrapped module (no DDP/compile)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    # the run's TrainConfig; typed loosely because this module sits below train/ (a hook in
    # compress/ must not import train/ to read it)
    config: Any
    device: torch.device
    epoch: int = 0  # 0-based index of the current epoch
    step: int = 0  # optimizer steps taken so far, over the whole run
    steps_per_epoch: int = 0
    rank: int = 0
    world_size: int = 1
    scheduler: Any = None
    # The wrapped model the loop calls (DDP / compiled); hooks that run extra forwards use it.
    forward_model: nn.Module | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class TrainHook:
    """Base class: every method is a no-op, so a hook overrides only what it needs."""

    #: name used for the hook's entries in checkpoints and metrics
    name: str = "hook"
    #: run after every other hook at each call (a weight average must see the weights after
    #: the masks have zeroed them, or a pruned model's average would not stay sparse)
    runs_last: bool = False

    def on_train_start(self, state: TrainState) -> None:
        pass

    def on_epoch_start(self, state: TrainState) -> None:
        pass

    def loss(
        self,
        state: TrainState,
        images: torch.Tensor,
        labels: torch.Tensor,
        logits: torch.Tensor,
        loss: torch.Tensor,
    ) -> torch.Tensor:
        """The step's loss, changed or not. ``labels``: int64 (N,) class indices, or float
        (N, classes) class probabilities where the run mixes its batches (``mix:``);
        ``torch.nn.functional.cross_entropy`` takes either."""
        return loss

    def after_backward(self, state: TrainState) -> None:
        pass

    def after_step(self, state: TrainState) -> None:
        pass

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        pass

    def on_train_end(self, state: TrainState) -> None:
        pass

    def before_evaluate(self, state: TrainState) -> None:
        """Before the test set is scored and before ``best`` is saved (e.g. swap in averaged
        weights); ``after_evaluate`` undoes it."""
        pass

    def after_evaluate(self, state: TrainState) -> None:
        pass

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors to keep in the checkpoint (e.g. masks), saved as ``hook.<name>.<key>``."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state to keep in the checkpoint's metadata."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def describe(self) -> str:
        """The hook and the settings that shape the run, for the run's summary line
        (``distill (teacher t.json, T 4, alpha 0.9, kd)``); by default the name alone."""
        return self.name
