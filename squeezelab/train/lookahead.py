"""Lookahead (Zhang, Lucas, Hinton and Ba 2019, arXiv 1907.08610): the optimizer takes ``k``
fast steps, then the slow weights move ``alpha`` of the way toward where the fast ones went and
the fast weights restart from there: ``slow += alpha * (fast - slow); fast = slow``. It damps
the noise of a high learning rate at the cost of a little progress per step, which is why the
fast CIFAR-10 recipes (airbench) use it.

With ``ramp`` the pull grows over the run, as airbench94's does: at step ``s`` of ``S`` the slow
weights move ``1 - (1 - alpha) * (s / S)^3`` of the way, all of it (no pull) at the start and
``alpha`` at the end, so the high-rate early steps are not held back and the last ones are
averaged most. ``S`` is read from the run's config at each sync, so a time budget that shortens
the run after its first epoch shortens the ramp too.

``LookaheadHook(steps, alpha, ramp)`` keeps a float copy of every trainable parameter (BatchNorm
statistics and other buffers follow the fast weights, as the paper's implementation does; the
inner optimizer's state is kept, as the paper's default). It runs after every other hook, so a
pruning mask applied after each step holds in both copies; with ``ema_decay`` the average is of
the weights Lookahead leaves; the final model holds the fast weights as the last step left
them. ``TrainConfig.lookahead_steps`` > 0 switches it on. A checkpoint
holds the slow weights and the step count, so a resumed run continues exactly.
"""
from __future__ import annotations

import torch

from squeezelab.hooks import TrainHook, TrainState


class LookaheadHook(TrainHook):
    name = "lookahead"
    runs_last = True

    def __init__(self, steps: int, alpha: float = 0.5, ramp: bool = False):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"lookahead_steps must be an integer >= 1, got {steps!r}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"lookahead_alpha must be in (0, 1], got {alpha!r}")
        self.steps, self.alpha, self.ramp = steps, float(alpha), bool(ramp)
        self.count = 0  # optimizer steps since the slow weights last moved
        self.slow: dict[str, torch.Tensor] = {}
        self._live: dict[str, torch.Tensor] = {}

    def on_train_start(self, state: TrainState) -> None:
        self._live = {k: p for k, p in state.model.named_parameters() if p.requires_grad}
        if set(self.slow) != set(self._live):  # a fresh run (a resumed one loaded its own)
            self.slow = {k: p.detach().float().clone() for k, p in self._live.items()}
            self.count = 0
        else:
            self.slow = {k: v.to(self._live[k].device) for k, v in self.slow.items()}

    @torch.no_grad()
    def after_step(self, state: TrainState) -> None:
        self.count += 1
        if self.count < self.steps:
            return
        self.count = 0
        alpha = self.alpha_at(state)
        for key, slow in self.slow.items():
            fast = self._live[key]
            slow.add_(fast.float() - slow, alpha=alpha)
            fast.copy_(slow)

    def alpha_at(self, state: TrainState) -> float:
        """The share of the way the slow weights move at a sync after ``state.step`` steps."""
        if not self.ramp:
            return self.alpha
        total = max(1, state.config.epochs * state.steps_per_epoch)
        progress = min(1.0, state.step / total)
        return 1.0 - (1.0 - self.alpha) * progress ** 3

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.slow.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.slow = {k: v.clone().float() for k, v in tensors.items()}

    def state_dict(self) -> dict:
        return {"count": self.count, "steps": self.steps, "alpha": self.alpha,
                "ramp": self.ramp}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state.get("count", 0))

    def describe(self) -> str:
        ramp = " at the end, from 1 (cubic ramp)" if self.ramp else ""
        return f"{self.name} (every {self.steps} steps, alpha {self.alpha:g}{ramp})"


__all__ = ["LookaheadHook"]
