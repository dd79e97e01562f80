"""An exponential moving average of the weights (Polyak averaging, as fast CIFAR-10 recipes use
it: the average of the last few hundred steps scores better than the last step's weights).

``WeightAverageHook(decay)`` keeps a float copy of every floating-point tensor of the model's
state dict (weights and BatchNorm statistics) and after each optimizer step moves it toward the
model: ``avg = d * avg + (1 - d) * w`` with ``d = min(decay, (1 + n) / (10 + n))`` after ``n``
updates, so early steps, whose weights are far from the end, fade quickly. The test set is
scored with the average swapped in, ``best`` holds the average, and when training ends the
model keeps it; ``last`` holds the training weights and, beside them, the average (so a resumed
run continues both exactly; ``squeezelab eval RUN/checkpoints/last --weights average`` scores the
average from there). ``TrainConfig.ema_decay`` > 0 switches it on. The hook runs after
every other one, so under fixed masks the average stays exactly as sparse as the model; masks
that change within a run (DSD's sparse phase) reach the average only over about
``1 / (1 - decay)`` steps.
"""
from __future__ import annotations

import torch

from squeezelab.hooks import TrainHook, TrainState


class WeightAverageHook(TrainHook):
    name = "ema"
    runs_last = True  # averages what the masks (and any other hook) left after each step

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.average: dict[str, torch.Tensor] = {}
        self._saved: dict[str, torch.Tensor] | None = None
        self._live: dict[str, torch.Tensor] = {}  # the model's own tensors, averaged each step

    def _float_state(self, state: TrainState) -> dict[str, torch.Tensor]:
        return {k: v for k, v in state.model.state_dict().items() if v.is_floating_point()}

    def on_train_start(self, state: TrainState) -> None:
        # state_dict() tensors share storage with the parameters and buffers, which train in
        # place: found once here, not rebuilt at every step
        self._live = current = self._float_state(state)
        if set(self.average) != set(current):  # a fresh run (a resumed one loaded its average)
            self.average = {k: v.detach().float().clone() for k, v in current.items()}
            self.updates = 0
        else:
            self.average = {k: v.to(current[k].device) for k, v in self.average.items()}

    @torch.no_grad()
    def after_step(self, state: TrainState) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, avg in self.average.items():
            avg.mul_(d).add_(self._live[key].float(), alpha=1 - d)

    @torch.no_grad()
    def before_evaluate(self, state: TrainState) -> None:
        current = self._float_state(state)
        self._saved = {k: v.detach().clone() for k, v in current.items()}
        for key, value in current.items():
            value.copy_(self.average[key])

    @torch.no_grad()
    def after_evaluate(self, state: TrainState) -> None:
        if self._saved is None:
            return
        current = self._float_state(state)
        for key, value in current.items():
            value.copy_(self._saved[key])
        self._saved = None

    @torch.no_grad()
    def on_train_end(self, state: TrainState) -> None:
        for key, value in self._float_state(state).items():
            value.copy_(self.average[key])

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.average.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.average = {k: v.clone().float() for k, v in tensors.items()}

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state.get("updates", 0))

    def describe(self) -> str:
        return f"{self.name} (decay {self.decay:g})"


__all__ = ["WeightAverageHook"]
