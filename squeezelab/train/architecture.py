"""Architecture learning, the training side (Srinivas & Babu, "Learning the Architecture of
Deep Neural Networks", arXiv 1511.05497): the regulariser on the tri-state ReLU gates
(``layers.tsrelu.TsReLU``: w per channel, d per layer) and the clamp that keeps them in [0, 1].

    R = width_binarize * sum w (1 - w)  +  depth_binarize * sum d (1 - d)
        + width_count * sum cost * w

The first two terms are zero at 0 and 1 and push each gate to the nearer of the two (their
largest value is at 0.5, where ``cut_architecture`` rounds). On their own they leave a gate that
starts at 1 at 1 (at w = 1 the first pushes up with slope width_binarize); the third, the
paper's term that "encourages the total number of neurons after elimination to be small", pulls
every w down, by 1 per neuron (``cost`` 1) or by the parameters each channel costs
(``compress.pruning.architecture.channel_costs``, scaled to a mean of 1), so the data loss
decides which neurons are worth keeping: a gate leaves 1 where width_count * cost exceeds
width_binarize plus what the data loss pays for the neuron. Every step ends with w and d
clamped to [0, 1].

With ``ramp`` (the default) the two binarizing terms grow linearly from 0 to their weights over
the run: early on the count term and the data loss alone decide which gates fall, late the
binarizers push every gate to 0 or 1 while the network can still adapt, so that rounding at the
end changes little (with constant weights small enough to let gates leave 1, many ended the
run near 0.5, where rounding is a guess).

With a floor (``min_width``, a fraction of each layer's width) the count term leaves each
layer's widest-open ``layers.tsrelu.width_floor`` gates alone, so it cannot close a whole layer:
at full size, pricing channels by their parameters shut the last two squeezes of the default
CIFAR SqueezeNet to one channel each, and the cut model never left 10% (the README's
architecture-learning row). ``cut_architecture`` keeps the same channels.

The gates get their own optimizer group without weight decay (a decay would be a second,
uncontrolled pull toward 0), following the run's learning-rate schedule.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from squeezelab.hooks import TrainHook, TrainState
from squeezelab.layers.tsrelu import TsReLU, floor_mask, width_floor
from squeezelab.models import unwrap_model


def binarize_gates_penalty(values: torch.Tensor) -> torch.Tensor:
    """sum v (1 - v): zero where every value is 0 or 1, largest (1/4 each) at 0.5."""
    v = values.float()
    return (v * (1 - v)).sum()


def default_gate_lr(total_steps: int, run_lr: float) -> float:
    """The gates' peak learning rate when none is given: one over the run's steps, so that
    under Adam (which moves a parameter about lr a step, whatever its gradient's size) a gate
    can travel about its whole [0, 1] range once over the run, however long it is. Measured:
    the small model learned well at 0.02 over 48 steps (one over its steps); the full CIFAR
    SqueezeNet at the run's lr (0.005) over 1,950 steps moved every gate about ten ranges,
    and the count term closed all but one channel of the last five squeezes (top-1 10%).
    ``run_lr`` when the run's length is unknown."""
    return 1.0 / total_steps if total_steps > 0 else run_lr


class ArchitectureHook(TrainHook):
    """Adds the gate regulariser (module docstring) to the loss and clamps every TsReLU's
    gates to [0, 1] after each step.

    ``costs``: activation path -> per-channel cost (C,), e.g. ``channel_costs(model)``; they
    are scaled to a mean of 1 over all channels (None: 1 per channel, the paper's neuron
    count). ``learn_depth=False`` freezes every d (at its value, 0: a ReLU) and drops its term.
    ``gate_lr``: the gates' peak learning rate (None: one over the run's steps, see
    ``default_gate_lr``). ``ramp``: the binarizing
    terms' weights grow linearly from 0 to ``width_binarize`` / ``depth_binarize`` over the
    run's steps (False: constant). ``min_width``: the floor (module docstring; 0: none).
    """

    name = "architecture"

    def __init__(self, width_binarize: float = 5e-2, depth_binarize: float = 5e-2,
                 width_count: float = 5e-3, costs: Mapping[str, torch.Tensor] | None = None,
                 learn_depth: bool = True, gate_lr: float | None = None, ramp: bool = True,
                 min_width: float = 0.0):
        for label, value in (("width_binarize", width_binarize),
                             ("depth_binarize", depth_binarize), ("width_count", width_count)):
            if not value >= 0:
                raise ValueError(f"{label} must be >= 0, got {value}")
        if gate_lr is not None and not gate_lr > 0:
            raise ValueError(f"gate_lr must be > 0, got {gate_lr}")
        width_floor(1, min_width)  # checks the range
        self.width_binarize = float(width_binarize)
        self.depth_binarize = float(depth_binarize)
        self.width_count = float(width_count)
        self.costs = None if costs is None else {k: torch.as_tensor(v, dtype=torch.float32)
                                                 for k, v in costs.items()}
        self.learn_depth = bool(learn_depth)
        self.gate_lr = gate_lr
        self.ramp = bool(ramp)
        self.min_width = float(min_width)
        self._progress = 1.0  # fraction of the run done: scales the binarizers under ramp
        self._total_steps = 0
        self._gates: dict[str, TsReLU] = {}
        self._cost: dict[str, torch.Tensor] = {}
        self._last = torch.zeros(())

    def on_train_start(self, state: TrainState) -> None:
        self._gates = {n: m for n, m in unwrap_model(state.model).named_modules()
                       if isinstance(m, TsReLU)}
        if not self._gates:
            raise ValueError(f"{type(unwrap_model(state.model)).__name__} has no TsReLU gates: "
                             "install them first (compress.pruning.architecture."
                             "install_gates_)")
        self._cost = self._scaled_costs()
        params = [p for g in self._gates.values() for p in (g.gate_w, g.gate_d)]
        if not self.learn_depth:
            for g in self._gates.values():
                g.gate_d.requires_grad_(False)
        epochs = getattr(state.config, "epochs", None)
        self._total_steps = int(epochs * state.steps_per_epoch) if epochs else 0
        self._own_group(state, params)
        self._update_progress(state)
        self.clamp_()

    def _update_progress(self, state: TrainState) -> None:
        if self.ramp:
            self._progress = (min(1.0, state.step / self._total_steps) if self._total_steps
                              else 1.0)

    def _scaled_costs(self) -> dict[str, torch.Tensor]:
        if self.costs is None:
            return {n: torch.ones(g.num_channels) for n, g in self._gates.items()}
        missing = [n for n in self._gates if n not in self.costs]
        if missing:
            raise ValueError(f"costs name no cost for the gates at {missing}")
        bad = [n for n, g in self._gates.items() if self.costs[n].shape != (g.num_channels,)]
        if bad:
            raise ValueError(f"costs of {bad} do not have one value per channel")
        mean = torch.cat([self.costs[n] for n in self._gates]).mean()
        return {n: self.costs[n] / mean for n in self._gates}

    def _own_group(self, state: TrainState, params: list[torch.nn.Parameter]) -> None:
        """Move the gates out of the optimizer's groups into one without weight decay, and
        let the LambdaLR schedule drive it like the first group."""
        opt = state.optimizer
        ids = {id(p) for p in params}
        if any(id(p) in ids for g in opt.param_groups[1:] for p in g["params"]) \
                or not any(id(p) in ids for p in opt.param_groups[0]["params"]):
            return  # resumed, or set up by the caller: leave the groups as they are
        first = opt.param_groups[0]
        first["params"] = [p for p in first["params"] if id(p) not in ids]
        lr = self.gate_lr if self.gate_lr is not None else default_gate_lr(
            self._total_steps, first.get("initial_lr", first["lr"]))
        group = {k: v for k, v in first.items() if k != "params"}
        group.update(weight_decay=0.0, initial_lr=lr)
        scheduler = state.scheduler
        if scheduler is not None and hasattr(scheduler, "lr_lambdas"):
            factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
            group["lr"] = lr * factor
            opt.add_param_group({"params": params, **group})
            scheduler.base_lrs.append(lr)
            scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])
        else:
            group["lr"] = lr
            opt.add_param_group({"params": params, **group})

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep every w and d in [0, 1]."""
        for g in self._gates.values():
            g.gate_w.clamp_(0.0, 1.0)
            g.gate_d.clamp_(0.0, 1.0)

    def penalty(self) -> torch.Tensor:
        """The regulariser of the current gates (differentiable)."""
        total = torch.zeros(())
        scale = self._progress if self.ramp else 1.0
        for n, g in self._gates.items():
            w = g.gate_w.float()
            total = total.to(w.device)
            total = total + scale * self.width_binarize * binarize_gates_penalty(w)
            cost = self._cost[n].to(w.device)
            if self.min_width:
                cost = cost.masked_fill(floor_mask(w, self.min_width), 0.0)
            total = total + self.width_count * (cost * w).sum()
            if self.learn_depth:
                total = total + scale * self.depth_binarize * binarize_gates_penalty(g.gate_d)
        return total

    def loss(self, state, images, labels, logits, loss) -> torch.Tensor:
        term = self.penalty()
        self._last = term.detach()  # read only at epoch end: no per-step sync
        return loss + term.to(loss.dtype)

    def after_step(self, state: TrainState) -> None:
        self.clamp_()
        self._update_progress(state)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        metrics["architecture_penalty"] = float(self._last)
        metrics["binarize_scale"] = self._progress if self.ramp else 1.0
        metrics["gates_on"] = int(sum(int((g.gate_w >= 0.5).sum())
                                      for g in self._gates.values()))
        metrics["gates_total"] = int(sum(g.num_channels for g in self._gates.values()))
        metrics["linear_layers"] = int(sum(float(g.gate_d.detach()) >= 0.5
                                           for g in self._gates.values()))


__all__ = ["ArchitectureHook", "binarize_gates_penalty"]
