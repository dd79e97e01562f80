"""Channel pruning as a workflow: remove whole channels of a SqueezeNet (structured pruning,
Li et al. 2017, arXiv 1608.08710; network slimming's BatchNorm-scale ranking, Liu et al. 2017,
arXiv 1708.06519), rebuild the smaller model, optionally fine-tune it, measure it before and
after (top-1 under one :class:`~squeezelab.train.evaluate.EvalProtocol`, parameters, MACs, CPU
speed) and save it as an ordinary checkpoint.

    result = prune_channels("runs/base", "slim", ChannelPruneConfig(fraction=0.25),
                            data=(train, test), protocol=EvalProtocol())
    result.after["top1"], result.path

It combines training (``squeezelab.train``) with the channel surgery of
``squeezelab.compress.pruning.channels``; ``squeezelab prune --channels`` calls it and prints.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from squeezelab.checkpoint import save_checkpoint, source_meta
from squeezelab.compress.format.checkpoints import Compressible, load_compressible
from squeezelab.compress.pruning.channels import (
    ChannelPruneReport,
    find_dead_channels,
    remove_channels,
    smallest_channels,
)
from squeezelab.compress.quantization.weight_sharing import shared_modules
from squeezelab.config import ConfigBase, ConfigError
from squeezelab.data.preprocess import Preprocess
from squeezelab.models import model_spec
from squeezelab.train.config import TrainConfig
from squeezelab.train.console import print_line
from squeezelab.train.evaluate import EvalProtocol
from squeezelab.workflows.fine_tuning import (
    FineTuningDistillConfig,
    check_retraining,
    check_train_section,
    default_work_dir,
    distillation_hooks,
    fine_tuning_config,
    fine_tuning_distill,
    fresh_run_dir,
    measure_model,
)

#: channel rankings ``smallest_channels`` offers
CHANNEL_SCORES = ("auto", "filter_norm", "bn_scale")


@dataclass
class ChannelPruneConfig(ConfigBase):
    """What ``prune_channels`` removes and how it fine-tunes.

    fraction: remove this fraction (0..1) of the channels of every removable conv, the lowest
        ranked by ``score`` ("auto": BatchNorm |gamma| behind BatchNorm, else the filter's L2
        norm); None removes the dead channels instead (filters whose L2 norm <= ``dead_eps``).
    retrain_epochs / retrain_lr: fine-tuning of the smaller model (0 epochs: none).
    train: TrainConfig fields of that fine-tuning run (data, batch_size, optimizer ...), except
        epochs / lr / run_name / model, which it sets itself.
    distill: the fine-tuning also learns from a teacher's outputs (a FineTuningDistillConfig or
        its mapping): ``teacher: dense``, the default, is the model before its channels were
        cut, which recovers more of its accuracy in few epochs than the labels alone.
    """

    fraction: float | None = None
    score: str = "auto"
    dead_eps: float = 1e-8
    retrain_epochs: int = 0
    retrain_lr: float = 0.01
    train: dict[str, Any] = field(default_factory=dict)
    distill: FineTuningDistillConfig | None = None

    def __post_init__(self) -> None:
        self.distill = fine_tuning_distill(self.distill, self.retrain_epochs)
        if self.fraction is not None:
            if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) \
                    or not 0.0 <= self.fraction < 1.0:
                raise ConfigError(f"channel fraction must be in [0, 1) or None (the dead "
                                  f"channels), got {self.fraction!r}")
            self.fraction = float(self.fraction)
        if self.score not in CHANNEL_SCORES:
            raise ConfigError(f"score must be one of {CHANNEL_SCORES}, got {self.score!r}")
        if not isinstance(self.dead_eps, (int, float)) or self.dead_eps < 0:
            raise ConfigError(f"dead_eps must be a number >= 0, got {self.dead_eps!r}")
        check_retraining(self.retrain_epochs, self.retrain_lr)
        self.train = check_train_section(self.train, "prune_channels",
                                         "retrain_epochs, retrain_lr, the work directory")
        self.train_config("check")  # unknown or bad TrainConfig values fail now, not mid-run

    def train_config(self, model_name: str) -> TrainConfig:
        """The TrainConfig of the fine-tuning run."""
        return fine_tuning_config(self.train, epochs=self.retrain_epochs, lr=self.retrain_lr,
                                  run_name="channels", model=model_name,
                                  source="channel pruning 'train' section")

    def describe(self) -> str:
        """``"0.25 of the channels (auto)"`` / ``"the dead channels (eps 1e-08)"``."""
        if self.fraction is None:
            return f"the dead channels (eps {self.dead_eps:g})"
        return f"{self.fraction:g} of the channels ({self.score})"


@dataclass
class ChannelPruneResult:
    """What ``prune_channels`` returns. ``before`` / ``after``: ``top1`` (None when no test
    data was given), ``protocol`` (how top-1 was scored), ``parameters``, ``macs`` and
    ``images_per_s`` (fp32, batch 64, this CPU) of the source and of the smaller model."""

    path: Path  # the checkpoint written
    model: nn.Module  # the smaller model, in eval mode, as saved
    report: ChannelPruneReport
    before: dict[str, Any]
    after: dict[str, Any]
    run_dir: Path | None  # the fine-tuning run, if any
    config: ChannelPruneConfig
    meta: dict[str, Any]  # the checkpoint's meta

    def to_dict(self) -> dict[str, Any]:
        """The record written into the checkpoint's meta (``channel_prune``), as it reads
        back from the file (JSON types: lists, not tuples)."""
        return json.loads(json.dumps(self.meta["channel_prune"]))


def _image_size(test, meta: dict[str, Any]) -> tuple[int, int]:
    """(height, width) the model is measured at: the test images', else the size it records."""
    if test is not None:
        return tuple(test.image_size)
    from squeezelab.inference import trained_image_size

    size = trained_image_size(meta)
    if size is None:
        raise ValueError("no test data and no recorded input size: cannot count MACs; give "
                         "the data the model was trained on")
    return (size, size) if isinstance(size, int) else tuple(size)


def prune_channels(
    source: str | os.PathLike | Compressible,
    output: str | os.PathLike,
    config: ChannelPruneConfig,
    data: tuple[Any, Any] | None = None,
    *,
    protocol: EvalProtocol | None = None,
    work_dir: str | os.PathLike | None = None,
    source_name: str | None = None,
    log: Callable[[str], None] = print_line,
) -> ChannelPruneResult:
    """Remove channels from the checkpoint ``source`` (a path, or one already read by
    ``load_compressible``; its model is not changed) as ``config`` says, rebuild the smaller
    model, fine-tune it ``config.retrain_epochs`` (a run in ``work_dir``, default
    ``runs/<output stem>-channels``), measure both models and save the smaller one to
    ``output`` (an ordinary checkpoint that records what was done and measured).

    ``data``: (train, test) ImageTensors; train is needed only to fine-tune, test to score
    top-1 (None: top-1 is not measured, and the record says None). ``protocol``: how top-1 is
    scored, both times (default: as the source model was trained, fp32). ``source_name``:
    how errors name the source (default: its path).
    """
    if not isinstance(config, ChannelPruneConfig):
        raise TypeError(f"config must be a ChannelPruneConfig, got {type(config).__name__}")
    train, test = data if data is not None else (None, None)
    if config.retrain_epochs and train is None:
        raise ValueError(f"fine-tuning {config.retrain_epochs} epoch(s) needs training data: "
                         "give data=(train, test)")
    src = source if isinstance(source, Compressible) else load_compressible(source)
    source_name = source_name or (str(source) if not isinstance(source, Compressible)
                                  else "the source model")
    if shared_modules(src.model):
        raise ValueError(f"{source_name} is weight-shared; remove channels from the dense (or "
                         "magnitude-pruned) checkpoint before sharing")
    protocol = protocol or EvalProtocol.for_model(src.meta)
    output = Path(output)
    run_dir = None
    if config.retrain_epochs:
        run_dir = fresh_run_dir(Path(work_dir or default_work_dir(output, "channels"))
                                / "channels", log)
        log(f"fine-tuning run goes to {run_dir}")
    model = src.model.eval()
    selected = (find_dead_channels(model, config.dead_eps) if config.fraction is None
                else smallest_channels(model, config.fraction, by=config.score))
    new, report = remove_channels(model, selected, config.dead_eps)
    log(f"removing {config.describe()}")
    for name, idx in report.removed.items():
        log(f"  {name:<28} -{len(idx)} channels")
    if not report.removed:
        log("  no channel to remove" + (" (no dead channel: train with --group-lasso-weight "
                                        "first, or cut a FRACTION)"
                                        if config.fraction is None else ""))
    size = _image_size(test, src.meta)
    before = measure_model(model, test, protocol, size, speed=True)
    if config.retrain_epochs:
        from squeezelab.train.loop import train as train_run

        log(f"fine-tuning {config.retrain_epochs} epoch(s)")
        # the teacher (``dense``) is the model as it was before its channels were cut
        hooks = distillation_hooks(config.distill, model, log)
        train_run(config.train_config(model_spec(new)["name"]), model=new, data=(train, test),
                  run_dir=run_dir, hooks=hooks)
        new.to(memory_format=torch.contiguous_format)  # as it is saved and loaded back
    new.eval()
    after = measure_model(new, test, protocol, size, speed=True)
    meta = source_meta(src.meta)
    if config.retrain_epochs:  # the record of the images it was fine-tuned on
        meta.update(Preprocess.from_data(train).to_meta())
    elif "mean" not in meta and test is not None:  # a source from before the record was kept
        meta.update(Preprocess.from_data(test).to_meta())
    meta["channel_prune"] = {"config": config.to_dict(), "report": report.to_dict(),
                             "retrain_epochs": config.retrain_epochs,
                             "run_dir": str(run_dir) if run_dir else None,
                             "before": before, "after": after}
    path = save_checkpoint(output, new, meta=meta)
    return ChannelPruneResult(path=path, model=new, report=report, before=before, after=after,
                              run_dir=run_dir, config=config, meta=meta)


__all__ = ["CHANNEL_SCORES", "ChannelPruneConfig", "ChannelPruneResult", "prune_channels"]
