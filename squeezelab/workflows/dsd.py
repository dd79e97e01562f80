"""Dense-Sparse-Dense training (Han et al., ICLR 2017, "DSD: Dense-Sparse-Dense Training for Deep
Neural Networks", arXiv 1607.04381) on the one mask mechanism (``compress.masks.MaskHook``).

Phases, in epochs: dense (ordinary training) -> sparse (per-layer top-k magnitude masks at
``sparsity``, computed from the weights at the start of the phase and re-applied after every
step) -> re-dense (masks lifted, the pruned weights restart from zero, learning rate x
``redense_lr_factor``). ``cycles`` repeats sparse -> re-dense. ``run_dsd`` is one ``train()``
over the total epochs with a ``DSDHook``, so resume, Ctrl-C and the run directory work as for
any run; starting from a trained dense checkpoint skips the dense phase.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from squeezelab.compress.pruning.magnitude import (
    PruneConfig,
    compute_masks,
    prunable_parameters,
)
from squeezelab.compress.pruning.masks import MaskHook
from squeezelab.config import ConfigBase, ConfigError, parse_key_values
from squeezelab.hooks import TrainHook, TrainState
from squeezelab.models import unwrap_model

PHASES = ("dense", "sparse", "redense")
LR_SCHEDULES = ("phase", "run", "capped")


@dataclass
class DSDConfig(ConfigBase):
    """What DSD prunes, for how long, and at which learning rate.

    sparsity: fraction (0..1) of each pruned layer's weights masked in the sparse phase; 0.4 is
        the seed study's best (and inside the paper's 25-50% for CNNs).
    dense_epochs / sparse_epochs / redense_epochs: phase lengths; 5-3-5 is the seed study's
        best split. ``dense_epochs=0`` starts sparse (from an already trained dense model).
    cycles: how many times sparse -> re-dense is run after the dense phase.
    redense_lr_factor: the re-dense phase's learning rate as a fraction of the run's
        (the paper: 1/10).
    lr_schedule: how the recipe's schedule (cosine, warm-up, ...) spans the phases. "phase":
        every phase runs the schedule afresh over its own epochs, so the dense phase ends
        converged (the trained model the paper starts from), the sparse phase retrains from the
        full rate, and re-dense runs it from rate x ``redense_lr_factor``. "run": one schedule
        over the whole run, scaled by ``redense_lr_factor`` during re-dense. "capped": one
        schedule over the whole run, as the dense run it is compared with has, with the
        re-dense rate capped at the initial rate x ``redense_lr_factor`` (the paper's "1/10 of
        the initial rate" read as a ceiling: a schedule already decayed below it is kept).
    layers: layer types or globs to prune (``PruneConfig`` vocabulary: "conv", "squeeze",
        "features.3.*"); empty = every Conv2d/Linear weight.
    exclude: layer types or globs never pruned (e.g. ["classifier"]).
    plot_layer: parameter whose weight histogram is recorded at the end of each phase;
        None = the largest prunable weight.

    ``from_dict`` (a recipe's ``dsd:`` section, where ``epochs: 5-3-5`` stands for the three
    phase lengths) / ``to_dict`` come from ``ConfigBase``; ``parse`` reads the ``--dsd`` form.
    """

    recipe_section = "dsd"

    sparsity: float = 0.4
    dense_epochs: int = 5
    sparse_epochs: int = 3
    redense_epochs: int = 5
    cycles: int = 1
    redense_lr_factor: float = 0.1
    lr_schedule: str = "phase"
    layers: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    plot_layer: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)):
            raise ConfigError(f"DSD sparsity must be a number, got {self.sparsity!r}")
        if not 0.0 <= float(self.sparsity) < 1.0:
            raise ConfigError(f"DSD sparsity must be in [0, 1), got {self.sparsity!r}")
        self.sparsity = float(self.sparsity)
        for name, minimum in (("dense_epochs", 0), ("sparse_epochs", 1), ("redense_epochs", 1),
                              ("cycles", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"DSD {name} must be an integer >= {minimum}, got {value!r}")
        if not (isinstance(self.redense_lr_factor, (int, float)) and
                0 < self.redense_lr_factor <= 1):
            raise ValueError(f"DSD redense_lr_factor must be in (0, 1], got "
                             f"{self.redense_lr_factor!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"DSD lr_schedule must be one of {LR_SCHEDULES}, got "
                             f"{self.lr_schedule!r}")
        for name in ("layers", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise ValueError(f"DSD {name} must be a list of layer types/globs, got {value!r}")
            setattr(self, name, [str(v) for v in value])
        if self.plot_layer is not None and not isinstance(self.plot_layer, str):
            raise ConfigError(f"DSD plot_layer must be a parameter name or null, got "
                              f"{self.plot_layer!r}")

    # --- phases -------------------------------------------------------------------------
    @property
    def total_epochs(self) -> int:
        return self.dense_epochs + self.cycles * (self.sparse_epochs + self.redense_epochs)

    def phase_at(self, epoch: int) -> tuple[str, int]:
        """(phase, cycle) of 0-based ``epoch``; cycle is 0 in the dense phase, then 1.."""
        if not 0 <= epoch < self.total_epochs:
            raise ValueError(f"epoch {epoch} is outside the DSD schedule of "
                             f"{self.total_epochs} epochs")
        if epoch < self.dense_epochs:
            return "dense", 0
        cycle, pos = divmod(epoch - self.dense_epochs, self.sparse_epochs + self.redense_epochs)
        return ("sparse" if pos < self.sparse_epochs else "redense"), cycle + 1

    def phase_bounds(self, epoch: int) -> tuple[int, int]:
        """(first epoch, number of epochs) of the phase that holds 0-based ``epoch``."""
        phase, cycle = self.phase_at(epoch)
        if phase == "dense":
            return 0, self.dense_epochs
        start = self.dense_epochs + (cycle - 1) * (self.sparse_epochs + self.redense_epochs)
        if phase == "sparse":
            return start, self.sparse_epochs
        return start + self.sparse_epochs, self.redense_epochs

    def prune_config(self) -> PruneConfig:
        if self.layers:
            return PruneConfig(rules={k: self.sparsity for k in self.layers},
                               exclude=list(self.exclude))
        return PruneConfig(sparsity=self.sparsity, exclude=list(self.exclude))

    # --- parsing ------------------------------------------------------------------------
    @classmethod
    def normalize_input(cls, values: Mapping[str, Any], source: str) -> dict[str, Any]:
        """``epochs`` ("5-3-5", "3-5" or [5, 3, 5]) stands for the three phase lengths."""
        values = super().normalize_input(values, source)
        if "epochs" in values:
            phases = parse_phase_epochs(values.pop("epochs"))
            twice = sorted(set(phases) & set(values))
            if twice:
                raise ConfigError(f"{source}: give epochs or {', '.join(twice)}, not both")
            values.update(phases)
        return values

    @classmethod
    def parse(cls, text: str) -> DSDConfig:
        """From the CLI form ``"sparsity=0.4,epochs=5-3-5,cycles=2,exclude=classifier"``
        (``parse_key_values``); list values (layers, exclude) separate items with ``+``."""
        values = parse_key_values(text, "--dsd")
        for key in ("layers", "exclude"):
            if isinstance(values.get(key), str):
                values[key] = [v for v in values[key].split("+") if v]
        return cls.from_dict(values, source=f"--dsd {text!r}")


def parse_phase_epochs(epochs: Any) -> dict[str, int]:
    """"5-3-5" (dense-sparse-redense) or "3-5" (sparse-redense, no dense phase) -> the fields."""
    parts = epochs.split("-") if isinstance(epochs, str) else epochs
    if not isinstance(parts, (list, tuple)) or len(parts) not in (2, 3) or not all(
            isinstance(p, int) and not isinstance(p, bool) or
            isinstance(p, str) and p.strip().isdigit() for p in parts):
        raise ValueError(f"DSD epochs must be DENSE-SPARSE-REDENSE or SPARSE-REDENSE "
                         f"non-negative integers such as 5-3-5, got {epochs!r}")
    numbers = [int(p) for p in parts]
    if len(numbers) == 2:
        numbers = [0, *numbers]
    return dict(zip(("dense_epochs", "sparse_epochs", "redense_epochs"), numbers))


class DSDHook(MaskHook):
    """Runs the DSD phases inside the training loop, by epoch (``DSDConfig.phase_at``).

    Sparse phase start: per-layer top-k magnitude masks (``compress.prune.compute_masks``) from
    the current weights, applied at once and after every step by ``MaskHook`` (which also
    zeroes the pruned entries' gradients and optimizer state). Re-dense phase start: masks
    cleared; the pruned weights are exactly zero and their momentum/Adam state was zeroed
    while masked, so they restart from zero.

    Learning rate (``lr_schedule``): "phase" replaces the scheduler's step -> factor function
    by one that restarts the recipe's schedule at every phase boundary (x
    ``redense_lr_factor`` in re-dense phases); it depends only on the step, so resume is exact.
    "capped" replaces it by the run's own schedule with re-dense steps capped at
    ``redense_lr_factor`` (a step function too). "run" keeps the run's schedule over the whole
    run and scales it: during a re-dense phase the scheduler's base learning rates are
    ``initial_lr * redense_lr_factor`` (with a constant schedule exactly lr/10), and
    ``initial_lr`` in the dense/sparse phases. The scaled base lrs are part of the scheduler's
    checkpointed state and are set again from the phase at every epoch start, so resume is
    exact.

    Each epoch's metrics get ``phase``, ``dsd_cycle`` and ``sparsity``. At the end of each phase
    a histogram of ``plot_layer``'s weights is recorded; at the end of training
    ``plot_weight_distributions`` writes ``dsd_weights.png`` (and the histograms as
    ``dsd_weights.json``) into the run directory.
    """

    name = "dsd"
    num_bins = 81  # odd: one bin centred on zero, so the pruned gap shows

    def __init__(self, config: DSDConfig, plot_path: str | Path | None = None):
        super().__init__()
        self.config = config
        self.phase: str | None = None  # phase of the last epoch started
        self.cycle = 0
        self.histograms: list[dict[str, Any]] = []
        self.plot_path = Path(plot_path) if plot_path else None
        self.plot_layer: str | None = config.plot_layer
        self._step_function = False  # set in on_train_start: is the lr a step -> factor function?

    # --- phases -------------------------------------------------------------------------
    def on_train_start(self, state: TrainState) -> None:
        if state.config.epochs != self.config.total_epochs:
            raise ValueError(f"the run has {state.config.epochs} epochs, but the DSD schedule "
                             f"{self._describe()} needs {self.config.total_epochs}")
        super().on_train_start(state)
        params = prunable_parameters(state.model)
        if self.plot_layer is None:
            self.plot_layer = max(params, key=lambda n: _param(state.model, n).numel())
        elif self.plot_layer not in params:
            raise ValueError(f"DSD plot_layer {self.plot_layer!r} is not a prunable weight "
                             f"(they look like {list(params)[:3]})")
        self.config.prune_config().layer_targets(state.model)  # typos fail before training
        self._step_function = (self.config.lr_schedule in STEP_FUNCTION_SCHEDULES
                               and _is_lambda_lr(state.scheduler))
        if self._step_function:
            factor = _step_lr_factor(self.config, state.config, state.steps_per_epoch)
            state.scheduler.lr_lambdas = [factor] * len(state.optimizer.param_groups)

    def on_epoch_start(self, state: TrainState) -> None:
        phase, cycle = self.config.phase_at(state.epoch)
        if (phase, cycle) != (self.phase, self.cycle):
            if phase == "sparse":
                self.set_masks(compute_masks(state.model, self.config.prune_config()))
            else:
                self.clear()
            self.phase, self.cycle = phase, cycle
        # with a step -> factor function installed, it carries the re-dense rate itself
        redense_scaled = phase == "redense" and not self._step_function
        self._set_lr_scale(state, self.config.redense_lr_factor if redense_scaled else 1.0)
        super().on_epoch_start(state)

    @staticmethod
    def _set_lr_scale(state: TrainState, factor: float) -> None:
        scheduler = state.scheduler
        groups = state.optimizer.param_groups
        initial = [g.get("initial_lr", g["lr"]) for g in groups]
        if not _is_lambda_lr(scheduler):
            for g, lr0 in zip(groups, initial):
                g["lr"] = lr0 * factor
            return
        scheduler.base_lrs = [lr0 * factor for lr0 in initial]
        # the lr of the next step, computed as LambdaLR.get_lr does (bit-identical on resume)
        for g, base, fn in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas):
            g["lr"] = base * fn(scheduler.last_epoch)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        super().on_epoch_end(state, metrics)  # sparsity
        metrics["phase"] = self.phase
        metrics["dsd_cycle"] = self.cycle
        last = state.epoch + 1 == self.config.total_epochs
        if last or self.config.phase_at(state.epoch + 1) != (self.phase, self.cycle):
            self.histograms.append(self._histogram(state))

    def on_train_end(self, state: TrainState) -> None:
        path = self.plot_path or (Path(state.extras["run_dir"]) / "dsd_weights.png"
                                  if "run_dir" in state.extras else None)
        if path is not None and state.is_main and self.histograms:
            plot_weight_distributions(self.histograms, path, layer=self.plot_layer)

    def _histogram(self, state: TrainState) -> dict[str, Any]:
        w = _param(state.model, self.plot_layer).detach().float().flatten().cpu()
        limit = float(w.abs().max()) or 1.0
        counts = torch.histc(w, bins=self.num_bins, min=-limit, max=limit)
        return {"phase": self.phase, "cycle": self.cycle, "epoch": state.epoch + 1,
                "layer": self.plot_layer, "limit": limit,
                "counts": [int(c) for c in counts.tolist()],
                "zeros": int((w == 0).sum()), "numel": w.numel()}

    def _describe(self) -> str:
        c = self.config
        return (f"{c.dense_epochs}-{c.sparse_epochs}-{c.redense_epochs}"
                + (f" x{c.cycles} cycles" if c.cycles > 1 else ""))

    # --- resume -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "cycle": self.cycle, "histograms": self.histograms,
                "plot_layer": self.plot_layer, "config": self.config.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        saved = state.get("config")
        if saved is not None and saved != self.config.to_dict():
            raise ValueError(f"the run was started with DSD {saved}, not {self.config.to_dict()}")
        self.phase, self.cycle = state.get("phase"), int(state.get("cycle", 0))
        self.histograms = list(state.get("histograms", []))
        self.plot_layer = state.get("plot_layer", self.plot_layer)


def _is_lambda_lr(scheduler: Any) -> bool:
    return scheduler is not None and hasattr(scheduler, "lr_lambdas")


# lr_schedule values carried by a step -> factor function replacing the scheduler's own
STEP_FUNCTION_SCHEDULES = ("phase", "capped")


def _step_lr_factor(config: DSDConfig, train_cfg, steps_per_epoch: int):
    """step -> lr multiplier built on the recipe's schedule (``optim.lr_factor``).

    "phase": the schedule restarted over each DSD phase, x ``redense_lr_factor`` in re-dense.
    "capped": the schedule over the whole run, capped at ``redense_lr_factor`` in re-dense.
    """
    from squeezelab.train.optim import lr_factor

    total = config.total_epochs * steps_per_epoch

    def factor(step: int) -> float:
        epoch = min(step // steps_per_epoch, config.total_epochs - 1)
        redense = config.phase_at(epoch)[0] == "redense"
        if config.lr_schedule == "capped":
            f = lr_factor(step, total, steps_per_epoch, train_cfg)
            return min(f, config.redense_lr_factor) if redense else f
        start, length = config.phase_bounds(epoch)
        scale = config.redense_lr_factor if redense else 1.0
        return scale * lr_factor(step - start * steps_per_epoch, length * steps_per_epoch,
                                 steps_per_epoch, train_cfg)

    return factor


def _param(model: nn.Module, name: str) -> torch.Tensor:
    return dict(unwrap_model(model).named_parameters())[name]


def plot_weight_distributions(histograms: Sequence[Mapping[str, Any]], path: str | Path,
                              layer: str | None = None) -> Path:
    """One histogram panel per recorded phase end (``DSDHook.histograms``) as a PNG.

    The sparse phase shows the bimodal shape (a gap around zero where the pruned weights sit,
    drawn as a separate bar at zero); after re-dense the gap fills again. Also writes the
    numbers beside the PNG (same name, ``.json``).
    """
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not histograms:
        raise ValueError("no weight histograms to plot (did any DSD phase finish?)")
    path = Path(path)
    n = len(histograms)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.2), squeeze=False, sharey=False)
    for ax, h in zip(axes[0], histograms):
        counts = torch.tensor(h["counts"], dtype=torch.float64)
        edges = torch.linspace(-h["limit"], h["limit"], len(counts) + 1)
        centre = len(counts) // 2
        counts[centre] -= h["zeros"]  # exact zeros drawn on their own
        ax.bar(edges[:-1].tolist(), counts.tolist(), width=float(edges[1] - edges[0]),
               align="edge", color="tab:blue")
        if h["zeros"]:
            ax.bar([0.0], [h["zeros"]], width=float(edges[1] - edges[0]) / 3, color="tab:red",
                   label=f"zeros ({100 * h['zeros'] / h['numel']:.0f}%)")
            ax.legend(fontsize=7)
        title = f"{h['phase']} (epoch {h['epoch']})"
        ax.set_title(title if h.get("cycle", 0) <= 1 else f"{title}, cycle {h['cycle']}",
                     fontsize=9)
        ax.set_xlabel("weight")
    axes[0][0].set_ylabel("count")
    fig.suptitle(f"DSD weight distribution: {layer or histograms[0].get('layer', '')}",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    path.with_suffix(".json").write_text(json.dumps(list(histograms), indent=1))
    return path


def run_dsd(
    cfg,
    dsd_cfg: DSDConfig,
    *,
    hooks: Sequence[TrainHook] = (),
    model: nn.Module | None = None,
    data: tuple[Any, Any] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    from_checkpoint: str | Path | None = None,
):
    """Train ``cfg`` under the DSD schedule: one ``train()`` over ``dsd_cfg.total_epochs``
    (``cfg.epochs`` is replaced by it) with a ``DSDHook``; returns the ``RunResult``.

    ``from_checkpoint``: start from a trained dense model (the checkpoint's model and weights);
    the dense phase is skipped (``dense_epochs`` must be 0 or is set to 0).
    """
    from squeezelab.train.loop import train

    if from_checkpoint is not None:
        if model is not None:
            raise ValueError("give either model= or from_checkpoint=, not both")
        from squeezelab.checkpoint import model_from_checkpoint

        model, ckpt = model_from_checkpoint(from_checkpoint)
        model.train()
        spec = ckpt.meta.get("model") or {}
        cfg = cfg.replace(model=spec.get("name", cfg.model))
        if dsd_cfg.dense_epochs:
            dsd_cfg = DSDConfig(**{**dsd_cfg.to_dict(), "dense_epochs": 0})
    cfg = cfg.replace(epochs=dsd_cfg.total_epochs)
    hook = DSDHook(dsd_cfg)
    return train(cfg, hooks=[hook, *hooks], model=model, data=data, run_dir=run_dir,
                 resume=resume)


__all__ = ["DSDConfig", "DSDHook", "LR_SCHEDULES", "PHASES", "parse_phase_epochs",
           "plot_weight_distributions", "run_dsd"]
