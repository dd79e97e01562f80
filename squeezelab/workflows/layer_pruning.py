"""Layer pruning as a workflow: drop whole Fire modules of a SqueezeNet, least harmful first,
optionally fine-tune, measure before and after and save the smaller model.

Which Fire goes is measured, not guessed: every Fire that the identity can replace
(``compress.pruning.fire_removal``: equal input and output widths) is removed in turn and the
model scored on ``selection_images`` training images (no augmentation), and the one whose
removal costs the least top-1 goes; with ``num_fires`` > 1 this repeats on the smaller model
(greedy). The choice is made on training images so the test images only score the result (a
choice made on the test set would flatter it).

    result = prune_fires("runs/base", "shallow", LayerPruneConfig(num_fires=2),
                         data=(train, test))
    result.after["top1"], result.steps
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from squeezelab.checkpoint import save_checkpoint, source_meta
from squeezelab.compress.format.checkpoints import Compressible, load_compressible
from squeezelab.compress.pruning.fire_removal import removable_fires, remove_fires
from squeezelab.config import ConfigBase, ConfigError
from squeezelab.data.preprocess import Preprocess
from squeezelab.models import model_spec
from squeezelab.train.config import TrainConfig
from squeezelab.train.console import print_line
from squeezelab.train.evaluate import EvalProtocol, evaluate_data
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


@dataclass
class LayerPruneConfig(ConfigBase):
    """What ``prune_fires`` removes and how it fine-tunes.

    num_fires: how many Fire modules to drop, one at a time, each the one whose removal costs
        the least top-1 on ``selection_images`` training images.
    retrain_epochs / retrain_lr: fine-tuning of the shallower model (0 epochs: none).
    train: TrainConfig fields of that run (data, batch_size, optimizer ...), except epochs /
        lr / run_name / model, which it sets itself.
    distill: the fine-tuning also learns from a teacher's outputs (a FineTuningDistillConfig or
        its mapping; ``teacher: dense``, the default, is the model before any Fire was dropped).
    """

    num_fires: int = 1
    selection_images: int = 1000
    retrain_epochs: int = 0
    retrain_lr: float = 0.01
    train: dict[str, Any] = field(default_factory=dict)
    distill: FineTuningDistillConfig | None = None

    def __post_init__(self) -> None:
        self.distill = fine_tuning_distill(self.distill, self.retrain_epochs)
        for name in ("num_fires", "selection_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        check_retraining(self.retrain_epochs, self.retrain_lr)
        self.train = check_train_section(self.train, "prune_fires",
                                         "retrain_epochs, retrain_lr, the work directory")
        self.train_config("check")  # unknown or bad TrainConfig values fail now, not mid-run

    def train_config(self, model_name: str) -> TrainConfig:
        """The TrainConfig of the fine-tuning run."""
        return fine_tuning_config(self.train, epochs=self.retrain_epochs, lr=self.retrain_lr,
                                  run_name="fires", model=model_name,
                                  source="layer pruning 'train' section")


@dataclass
class LayerPruneResult:
    """What ``prune_fires`` returns: the checkpoint written, the smaller model (eval mode),
    ``steps`` (per removal: every candidate's selection top-1 and the Fire removed),
    ``before`` / ``after`` (test ``top1`` or None, ``protocol``, ``parameters``, ``macs``)."""

    path: Path
    model: nn.Module
    steps: list[dict[str, Any]]
    before: dict[str, Any]
    after: dict[str, Any]
    run_dir: Path | None
    meta: dict[str, Any]


def fire_sensitivity(model: nn.Module, data, protocol: EvalProtocol) -> dict[str, Any]:
    """Top-1 of ``model`` on ``data`` (ImageTensors) and, per removable Fire, the top-1 with
    that Fire replaced by the identity: ``{"top1": t, "fires": {name: {"top1", "drop",
    "kind"}}}``, ``drop`` = t minus that top-1 (positive: worse without it)."""
    base = evaluate_data(model, data, protocol)["top1"]
    out = {}
    for name, kind in removable_fires(model).items():
        smaller, _ = remove_fires(model, [name])
        top1 = evaluate_data(smaller.eval(), data, protocol)["top1"]
        out[name] = {"top1": top1, "drop": base - top1, "kind": kind}
    return {"top1": base, "fires": out}


def prune_fires(
    source: str | os.PathLike | Compressible,
    output: str | os.PathLike,
    config: LayerPruneConfig,
    data: tuple[Any, Any],
    *,
    protocol: EvalProtocol | None = None,
    work_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = print_line,
) -> LayerPruneResult:
    """Drop ``config.num_fires`` Fire modules of the checkpoint ``source`` (its model is not
    changed), least harmful first as measured on training images, fine-tune the result
    ``config.retrain_epochs`` (a run in ``work_dir``, default ``runs/<output stem>-fires``),
    score both models on the test images under ``protocol`` (default: as the source was
    trained, fp32) and save the shallower one to ``output``, an ordinary checkpoint whose
    meta ``layer_prune`` records what was done and measured.

    ``data``: (train, test) ImageTensors; the train images choose the Fires, the test images
    score the result (test may be None: top-1 is then not measured).
    """
    if not isinstance(config, LayerPruneConfig):
        raise TypeError(f"config must be a LayerPruneConfig, got {type(config).__name__}")
    train, test = data
    if train is None:
        raise ValueError("layer pruning chooses the Fires on training images: give "
                         "data=(train, test)")
    src = source if isinstance(source, Compressible) else load_compressible(source)
    if src.masks is not None:
        raise ValueError("the source carries pruning masks; drop Fires from a dense model")
    protocol = protocol or EvalProtocol.for_model(src.meta)
    chooser = train.subset(torch.arange(min(config.selection_images, len(train))))
    model = src.model.eval()
    size = tuple(train.image_size)
    before = measure_model(model, test, protocol, size)
    current, steps = model, []
    for step in range(config.num_fires):
        sens = fire_sensitivity(current, chooser, protocol)
        if not sens["fires"]:
            raise ValueError(f"after {step} removal(s) no Fire of the model has equal input "
                             f"and output widths: cannot drop {config.num_fires} Fires")
        name = min(sens["fires"], key=lambda n: (sens["fires"][n]["drop"], n))
        current, report = remove_fires(current, [name])
        current.eval()
        steps.append({"selection_top1": sens["top1"], "candidates": sens["fires"],
                      "removed": name, "fire_index": report.removed[name],
                      "parameters": report.params_after})
        log(f"step {step + 1}: without {name} (Fire index {report.removed[name]}) top-1 on "
            f"{len(chooser)} training images {sens['fires'][name]['top1']:.4f} "
            f"(from {sens['top1']:.4f}); {report.params_after:,} parameters")
    run_dir = None
    if config.retrain_epochs:
        from squeezelab.train.loop import train as train_run

        run_dir = fresh_run_dir(Path(work_dir or default_work_dir(output, "fires")) / "fires",
                                log)
        log(f"fine-tuning {config.retrain_epochs} epoch(s); the run goes to {run_dir}")
        train_run(config.train_config(model_spec(current)["name"]), model=current,
                  data=(train, test), run_dir=run_dir,
                  hooks=distillation_hooks(config.distill, src.model, log))
        current.to(memory_format=torch.contiguous_format)
    current.eval()
    after = measure_model(current, test, protocol, size)
    meta = source_meta(src.meta)
    meta.update(Preprocess.from_data(train).to_meta())
    meta["layer_prune"] = {"config": config.to_dict(), "steps": steps,
                           "removed": [s["removed"] for s in steps],
                           "skip_fires": list(current.spec["kwargs"].get("skip_fires", [])),
                           "selection_images": len(chooser),
                           "run_dir": str(run_dir) if run_dir else None,
                           "before": before, "after": after}
    path = save_checkpoint(output, current, meta=meta)
    return LayerPruneResult(path=path, model=current, steps=steps, before=before, after=after,
                            run_dir=run_dir, meta=meta)


__all__ = ["LayerPruneConfig", "LayerPruneResult", "fire_sensitivity", "prune_fires"]
