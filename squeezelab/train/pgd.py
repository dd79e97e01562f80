"""Perturbed Gradient Descent (Jin, Ge, Netrapalli, Kakade & Jordan 2017, "How to Escape Saddle
Points Efficiently", arXiv 1703.00887) as a training hook.

Algorithm 2 of the paper, per step t: if ||grad f(x_t)|| <= g_thres and t - t_noise > t_thres,
then x_t <- x_t + xi with xi drawn uniformly from the ball B(0, r), and t_noise <- t; then the
usual step x_{t+1} = x_t - eta grad f(x_t). ``after_backward`` sees grad f(x_t) before the
optimizer steps, so adding xi there reproduces the update exactly (the gradient stays the one
taken at the unperturbed point, as in the paper).

No host sync per step: the decision is a 0/1 device tensor that scales a noise vector drawn
every step from the hook's own generator (so the run's global RNG stream, which dropout and
augmentation use, is the same whether or not noise is applied). The generator state is saved
with the checkpoint, so a resumed run draws the same noise.
"""
from __future__ import annotations

from typing import Any

import torch

from squeezelab.hooks import TrainHook, TrainState


class PerturbedGradientHook(TrainHook):
    """Add isotropic noise, uniform in a ball of radius ``radius`` (in parameter space, over all
    trainable parameters together), whenever the global gradient L2 norm is below
    ``threshold`` and no perturbation happened in the last ``interval`` steps.

    Adds ``pgd_perturbations`` (count in the epoch) to each epoch's metrics.
    """

    name = "pgd"

    def __init__(self, radius: float, threshold: float, interval: int = 10, seed: int = 0):
        if not radius > 0:
            raise ValueError(f"PGD radius must be > 0, got {radius}")
        if not threshold >= 0:
            raise ValueError(f"PGD threshold (gradient L2 norm) must be >= 0, got {threshold}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
            raise ValueError(f"PGD interval must be a non-negative integer of steps, "
                             f"got {interval!r}")
        self.radius, self.threshold, self.interval, self.seed = radius, threshold, interval, seed
        self._generator: torch.Generator | None = None
        self._pending_state: torch.Tensor | None = None
        # device tensors: no host sync per step
        self._last: torch.Tensor | None = None  # step of the last perturbation (-inf: never)
        self._count: torch.Tensor | None = None  # perturbations this epoch
        self._total = 0  # perturbations over the run (host int, updated at epoch ends)
        self.last_grad_norm: torch.Tensor | None = None

    # --- hook protocol ------------------------------------------------------------------
    def on_train_start(self, state: TrainState) -> None:
        self._ensure(state.device)

    def _ensure(self, device: torch.device) -> None:
        if self._generator is None:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
            if self._pending_state is not None:
                self._generator.set_state(self._pending_state)
                self._pending_state = None
        if self._last is None:
            self._last = torch.full((), float("-inf"), device=device)
        self._last = self._last.to(device)  # restored from a checkpoint on the CPU
        if self._count is None:
            self._count = torch.zeros((), device=device)

    def on_epoch_start(self, state: TrainState) -> None:
        self._ensure(state.device)
        self._count.zero_()

    @torch.no_grad()
    def after_backward(self, state: TrainState) -> None:
        self._ensure(state.device)
        params = [p for p in state.model.parameters() if p.requires_grad]
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
        self.last_grad_norm = norm
        fire = (norm <= self.threshold) & (state.step - self._last > self.interval)
        dims = sum(p.numel() for p in params)
        # Uniform in the d-ball: a Gaussian direction scaled to radius r * U^(1/d), the
        # power written as exp(log(U) / d) so it stays accurate for d ~ 1e6.
        direction = torch.randn(dims, device=state.device, generator=self._generator)
        u = torch.rand((), device=state.device, generator=self._generator)
        scale = self.radius * torch.exp(torch.log(u) / dims) / torch.linalg.vector_norm(direction)
        noise = direction * (scale * fire)
        offset = 0
        for p in params:
            p.add_(noise[offset:offset + p.numel()].view_as(p).to(p.dtype))
            offset += p.numel()
        self._last = torch.where(fire, torch.full_like(self._last, state.step), self._last)
        self._count += fire

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        count = int(self._count.item()) if self._count is not None else 0
        self._total += count
        metrics["pgd_perturbations"] = count

    # --- resume -------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self._generator is None:
            return {}
        return {"generator": self._generator.get_state(),
                "last_step": self._last.detach().cpu().reshape(1)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "generator" in tensors:
            if self._generator is not None:
                self._generator.set_state(tensors["generator"])
            else:
                self._pending_state = tensors["generator"]
        if "last_step" in tensors:
            self._last = tensors["last_step"].reshape(()).float()

    def state_dict(self) -> dict[str, Any]:
        return {"total_perturbations": self._total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._total = int(state.get("total_perturbations", 0))

    def describe(self) -> str:
        return (f"{self.name} (radius {self.radius:g} below gradient norm {self.threshold:g}, "
                f"at most every {self.interval} steps)")

    @property
    def total_perturbations(self) -> int:
        """Perturbations over the run, counted at epoch ends."""
        return self._total


__all__ = ["PerturbedGradientHook"]
