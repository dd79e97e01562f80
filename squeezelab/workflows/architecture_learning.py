"""Architecture learning as a workflow (Srinivas & Babu, "Learning the Architecture of Deep
Neural Networks", arXiv 1511.05497): learn -> round -> cut -> fine-tune.

1. learn: the source model's ReLUs after every removable conv become tri-state ReLUs
   (``compress.pruning.architecture.install_gates_``) and the model trains ``learn_epochs``
   with the gate regulariser (``train.architecture.ArchitectureHook``);
2. round and cut: gates rounded at ``threshold``, channels whose w is 0 removed physically,
   the rest folded into the weights (``cut_architecture``): an ordinary, smaller SqueezeNet;
3. fine-tune it ``finetune_epochs``;
4. measure the source, the gated model, the cut model before and after fine-tuning (top-1
   under one protocol, parameters, MACs) and save the result with the learned widths.

    result = learn_architecture("runs/base", "learned", ArchitectureLearningConfig(),
                                data=(train, test))
    print(widths_table(result.report)); result.after["parameters"]

The runs go to ``work_dir`` (default ``runs/<output stem>-arch``): ``learn`` (its checkpoints
hold the gated model; ``squeezelab eval`` loads them) and ``finetune``.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from squeezelab.checkpoint import save_checkpoint, source_meta
from squeezelab.compress.format.checkpoints import Compressible, load_compressible
from squeezelab.compress.pruning.architecture import (
    ArchitectureReport,
    channel_costs,
    cut_architecture,
    gate_modules,
    gate_scales,
    install_gates_,
    widths_table,
)
from squeezelab.config import ConfigBase, ConfigError
from squeezelab.data.preprocess import Preprocess
from squeezelab.models import model_spec
from squeezelab.train.architecture import ArchitectureHook
from squeezelab.train.config import TrainConfig
from squeezelab.train.console import print_line
from squeezelab.train.evaluate import EvalProtocol
from squeezelab.workflows.fine_tuning import (
    RUN_FIELDS,
    check_train_section,
    default_work_dir,
    fine_tuning_config,
    fresh_run_dir,
    measure_model,
)

#: what the count term of the regulariser charges per channel
COSTS = ("parameters", "neurons")


@dataclass
class ArchitectureLearningConfig(ConfigBase):
    """How ``learn_architecture`` learns, cuts and fine-tunes.

    learn_epochs / learn_lr: the gated training run (lr None: the train section's, else the
        model's default). width_binarize, depth_binarize, width_count: the regulariser's
        lambdas (``train/architecture.py``), the first two ramped from 0 over the run with
        ``binarize_ramp``; ``cost``: what width_count charges per channel,
        "parameters" (each channel's share of the model, so the pull matches the parameters
        saved) or "neurons" (1 each, the paper's count). learn_depth: learn d (False: every
        layer stays a ReLU). gate_lr: the gates' peak lr (None: one over the learning run's
        steps, ``train.architecture.default_gate_lr``). freeze_scales: hold the
        BatchNorm scale before each gate fixed while learning (``gate_scales``: it would
        otherwise grow as w shrinks, the same function, and every w could slide to 0).
        min_width: the floor, a fraction of each gated layer's width that the count term
        never pulls and the cut always keeps (its widest-open gates; 0: none). Without one,
        the full-size default model lost its last two squeezes to one channel each and never
        recovered (README); a quarter is the default.
    threshold: where gates are rounded. finetune_epochs / finetune_lr: training of the cut
        model (0 epochs: none). train: TrainConfig fields of both runs (data, batch_size,
        optimizer, lr: the default of learn_lr and finetune_lr ...), except epochs / run_name /
        out_dir / model, set here.
    """

    learn_epochs: int = 5
    learn_lr: float | None = None
    # the binarizers ramp up from 0 over the learning run (binarize_ramp): early the count
    # term and the data loss decide, late every gate is pushed to 0 or 1 (measured on a small
    # model: with constant weights low enough to let gates leave 1, many ended near 0.5)
    width_binarize: float = 5e-2
    depth_binarize: float = 5e-2
    width_count: float = 5e-3
    binarize_ramp: bool = True
    cost: str = "parameters"
    learn_depth: bool = True
    gate_lr: float | None = None
    freeze_scales: bool = True
    min_width: float = 0.25
    threshold: float = 0.5
    finetune_epochs: int = 2
    finetune_lr: float | None = None
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, low in (("learn_epochs", 1), ("finetune_epochs", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("width_binarize", "depth_binarize", "width_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("learn_lr", "gate_lr", "finetune_lr"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, (int, float)) or not value > 0):
                raise ConfigError(f"{name} must be > 0 or null, got {value!r}")
        if self.cost not in COSTS:
            raise ConfigError(f"cost must be one of {COSTS}, got {self.cost!r}")
        for name in ("learn_depth", "freeze_scales", "binarize_ramp"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.min_width, bool) or not isinstance(self.min_width, (int, float)) \
                or not 0 <= self.min_width < 1:
            raise ConfigError(f"min_width must be a fraction in [0, 1), got {self.min_width!r}")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold!r}")
        # lr may be set: it is learn_lr's and finetune_lr's default
        self.train = check_train_section(
            self.train, "learn_architecture", "learn_epochs, finetune_epochs, the work directory",
            fields=[f for f in RUN_FIELDS if f != "lr"])
        for phase in ("learn", "finetune"):  # bad TrainConfig values fail now, not mid-run
            self.run_config(phase, "check")

    def run_config(self, phase: str, model_name: str) -> TrainConfig:
        """The TrainConfig of ``phase`` "learn" or "finetune"."""
        epochs, lr = ((self.learn_epochs, self.learn_lr) if phase == "learn"
                      else (self.finetune_epochs, self.finetune_lr))
        return fine_tuning_config(self.train, epochs=epochs, lr=lr, run_name=phase,
                                  model=model_name, source=f"architecture learning {phase} run")

    def hook(self, model: nn.Module) -> ArchitectureHook:
        """The regulariser hook for the gated ``model``."""
        costs = channel_costs(model) if self.cost == "parameters" else None
        return ArchitectureHook(self.width_binarize, self.depth_binarize, self.width_count,
                                costs=costs, learn_depth=self.learn_depth,
                                gate_lr=self.gate_lr, ramp=self.binarize_ramp,
                                min_width=self.min_width)


@dataclass
class ArchitectureLearningResult:
    """What ``learn_architecture`` returns: the checkpoint written, the learned model (eval
    mode), the cut's ``report`` (the widths table), and the measurements: ``before`` (the
    source), ``gated`` (after learning, gates as learned), ``cut`` (rounded and cut, before
    fine-tuning) and ``after`` (fine-tuned): each ``top1`` (None without test data),
    ``protocol``, ``parameters``, ``macs``."""

    path: Path
    model: nn.Module
    report: ArchitectureReport
    before: dict[str, Any]
    gated: dict[str, Any]
    cut: dict[str, Any]
    after: dict[str, Any]
    learn_run: Path
    finetune_run: Path | None
    meta: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The record in the checkpoint's meta (``architecture_learning``)."""
        return self.meta["architecture_learning"]


def learn_architecture(
    source: str | os.PathLike | Compressible,
    output: str | os.PathLike,
    config: ArchitectureLearningConfig,
    data: tuple[Any, Any],
    *,
    protocol: EvalProtocol | None = None,
    work_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = print_line,
) -> ArchitectureLearningResult:
    """Learn the widths of the SqueezeNet in checkpoint ``source`` (its model is not changed)
    as the module docstring says and save the learned model to ``output``, an ordinary
    checkpoint whose meta ``architecture_learning`` records the widths and every measurement.

    ``data``: (train, test) ImageTensors (test None: top-1 is not measured). ``protocol``:
    how every top-1 is scored (default: as the source was trained, fp32).
    """
    if not isinstance(config, ArchitectureLearningConfig):
        raise TypeError(f"config must be an ArchitectureLearningConfig, got "
                        f"{type(config).__name__}")
    train, test = data
    if train is None:
        raise ValueError("architecture learning trains: give data=(train, test)")
    src = source if isinstance(source, Compressible) else load_compressible(source)
    if src.masks is not None:
        raise ValueError("the source carries pruning masks; learn the architecture of a dense "
                         "model")
    if gate_modules(src.model):
        raise ValueError("the source model has tri-state ReLU gates already (a learning run's "
                         "checkpoint?): start from the model it learned from")
    protocol = protocol or EvalProtocol.for_model(src.meta)
    size = tuple(train.image_size)
    name = model_spec(src.model)["name"]
    work = Path(work_dir or default_work_dir(output, "arch"))
    learn_dir = fresh_run_dir(work / "learn", log)
    finetune_dir = fresh_run_dir(work / "finetune", log) if config.finetune_epochs else None
    log(f"runs go to {work}")

    before = measure_model(src.model, test, protocol, size)
    gated = copy.deepcopy(src.model)
    installed = install_gates_(gated)
    if config.freeze_scales:
        for scale in gate_scales(gated).values():
            scale.requires_grad_(False)
    log(f"learning: {len(installed)} gated layers, {config.learn_epochs} epoch(s)")
    from squeezelab.train.loop import train as train_run

    train_run(config.run_config("learn", name), hooks=[config.hook(gated)], model=gated,
              data=(train, test), run_dir=learn_dir)
    gated.to(memory_format=torch.contiguous_format)
    gated_measure = measure_model(gated, test, protocol, size)
    learned, report = cut_architecture(gated.eval(), config.threshold, config.min_width)
    learned.eval()
    cut_measure = measure_model(learned, test, protocol, size)
    log(widths_table(report))
    log(f"cut: {report.params_before:,} -> {report.params_after:,} parameters"
        + ("" if report.exact else " (rounding not exact: fine-tuning follows)"))
    if config.finetune_epochs:
        log(f"fine-tuning {config.finetune_epochs} epoch(s)")
        train_run(config.run_config("finetune", name), model=learned, data=(train, test),
                  run_dir=finetune_dir)
        learned.to(memory_format=torch.contiguous_format)
    after = measure_model(learned, test, protocol, size)
    meta = source_meta(src.meta)
    meta.update(Preprocess.from_data(train).to_meta())
    meta["architecture_learning"] = {
        "config": config.to_dict(), "report": report.to_dict(), "before": before,
        "gated": gated_measure, "cut": cut_measure, "after": after,
        "learn_run": str(learn_dir), "finetune_run": str(finetune_dir) if finetune_dir else None}
    path = save_checkpoint(output, learned, meta=meta)
    return ArchitectureLearningResult(
        path=path, model=learned, report=report, before=before, gated=gated_measure,
        cut=cut_measure, after=after, learn_run=learn_dir, finetune_run=finetune_dir,
        meta=meta)


__all__ = ["COSTS", "ArchitectureLearningConfig", "ArchitectureLearningResult",
           "learn_architecture"]
