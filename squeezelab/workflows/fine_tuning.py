"""What every workflow that fine-tunes a trained model shares (the Deep Compression pipeline,
weight, channel and Fire pruning, architecture learning, the studies' cells):

- the ``train:`` section of its settings: ``fine_tune_train_section`` starts it from the
  checkpoint's own training settings, ``check_train_section`` refuses the fields the workflow
  sets itself for each run;
- the teacher: ``distill:`` settings whose ``teacher`` defaults to the model being fine-tuned as
  it was before the workflow changed it (``FineTuningDistillConfig``), and the hook that
  distils from it;
- the TrainConfig of each fine-tuning run (``fine_tuning_config``) and the check of its
  ``retrain_epochs`` / ``retrain_lr`` (``check_retraining``);
- the measurements of the model before and after (``measure_model``);
- where its fine-tuning runs go unless told (``default_work_dir``), and the clearing of an
  earlier run of the same output there (``fresh_run_dir``).

It sits below the workflows and above training: it imports ``squeezelab.train``, never a
workflow.
"""
from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from squeezelab.checkpoint import load_checkpoint, resolve_checkpoint
from squeezelab.config import ConfigError
from squeezelab.hooks import TrainHook
from squeezelab.metrics import count_macs, count_parameters, time_forward
from squeezelab.train.config import TrainConfig
from squeezelab.train.console import print_line
from squeezelab.train.distill import DistillConfig
from squeezelab.train.evaluate import EvalProtocol, evaluate_data

#: ``distill.teacher`` naming the model being fine-tuned, as it was before the workflow changed it
DENSE_TEACHER = "dense"

#: TrainConfig fields a workflow sets itself for each of its fine-tuning runs. A ``train``
#: section naming one would be overridden without a word (``epochs``, ``lr``, ...) or ignored
#: (``model_args``: the model is the checkpoint's), so ``check_train_section`` refuses them.
RUN_FIELDS = ("epochs", "lr", "run_name", "out_dir", "model", "model_args")

#: TrainConfig fields a fine-tuning run takes from the checkpoint's own training config: the
#: same data and subset (``subset_seed`` / ``seed``: see ``data_seed_of``), image size and
#: optimisation settings the model was trained with.
INHERITED_TRAIN_FIELDS = (
    "data", "data_root", "batch_size", "optimizer", "momentum", "weight_decay", "schedule",
    "augment", "label_smoothing", "precision", "channels_last", "seed", "subset_seed", "device",
    "image_size", "limit_train", "limit_test",
)


def check_retraining(epochs: Any, lr: Any) -> None:
    """Refuse a ``retrain_epochs`` that is not an integer >= 0 (0: no fine-tuning) or a
    ``retrain_lr`` that is not a number > 0."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"retrain_epochs must be an integer >= 0, got {epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ConfigError(f"retrain_lr must be > 0, got {lr!r}")


def fine_tuning_config(train: Mapping[str, Any], *, epochs: int, lr: float | None,
                       run_name: str, model: str, source: str) -> TrainConfig:
    """The TrainConfig of one fine-tuning run: the workflow's ``train`` section (checked by
    ``check_train_section``) without warm-up unless it asks for one (the model is trained
    already), at least one epoch (a workflow that does not fine-tune builds it only to check
    the section), ``lr`` where given (None: the section's, else the model's default)."""
    values = {"warmup_epochs": 0.0, **train, "epochs": max(1, epochs), "run_name": run_name,
              "model": model}
    if lr is not None:
        values["lr"] = lr
    return TrainConfig.from_dict(values, source=source)


def check_train_section(train: Any, workflow: str, sets: str,
                        fields: Iterable[str] = RUN_FIELDS) -> dict[str, Any]:
    """``train`` (a workflow's ``train:`` section) as a dict, refused if it is not a mapping or
    names one of ``fields``, the TrainConfig fields ``workflow`` sets itself (``sets`` says
    from what, for the message). Its values are checked by building the workflow's
    TrainConfig, which the caller does next, so that a bad one fails before any work."""
    if not isinstance(train, Mapping):
        raise ConfigError(f"train must be a mapping of TrainConfig fields, got "
                          f"{type(train).__name__}")
    fixed = sorted(set(train) & set(fields))
    if fixed:
        raise ConfigError(f"train section may not set {fixed}: {workflow} sets them ({sets})")
    return dict(train)


@dataclass
class FineTuningDistillConfig(DistillConfig):
    """A DistillConfig whose ``teacher`` defaults to ``"dense"``: the model being fine-tuned.
    Read from a workflow's ``distill:`` (the ``compress:`` section's, a pruning's), not a
    training recipe's own ``distill:``."""

    recipe_section = None
    teacher: str = DENSE_TEACHER

    @classmethod
    def normalize_input(cls, values: Mapping[str, Any], source: str) -> dict[str, Any]:
        return super().normalize_input({"teacher": DENSE_TEACHER, **values}, source)


def fine_tuning_distill(distill: Any, retrain_epochs: int) -> FineTuningDistillConfig | None:
    """A pruning workflow's ``distill`` setting as a FineTuningDistillConfig (a mapping is read,
    None stays None), refused where the workflow does not fine-tune: there is nothing for the
    teacher to teach."""
    if isinstance(distill, Mapping):
        distill = FineTuningDistillConfig.from_dict(distill, source="distill")
    if distill is not None and not isinstance(distill, FineTuningDistillConfig):
        raise ConfigError(f"distill must be a mapping of distillation settings or None, got "
                          f"{type(distill).__name__}")
    if distill is not None and not retrain_epochs:
        raise ConfigError("distill needs fine-tuning to act in: give retrain_epochs > 0")
    return distill


def distillation_hooks(distill: DistillConfig | None, model: nn.Module,
                       log: Callable[[str], None] = print_line) -> list[TrainHook]:
    """A fine-tuning run's distillation hook for ``distill`` (none for None): its teacher a
    frozen copy of ``model`` as it is now (``teacher: dense``: the model about to be pruned or
    cut) or the checkpoint ``distill.teacher`` names."""
    if distill is None:
        return []
    from squeezelab.train.distill import DistillHook

    dense = distill.teacher == DENSE_TEACHER
    log(f"distilling from {'the dense model' if dense else distill.teacher} in every "
        f"fine-tuning run ({distill.mode}, T={distill.temperature:g}, alpha={distill.alpha:g})")
    return [DistillHook(distill, teacher=copy.deepcopy(model) if dense else None)]


def measure_model(model: nn.Module, test: Any, protocol: EvalProtocol,
                  image_size: tuple[int, int], *, speed: bool = False) -> dict[str, Any]:
    """What a workflow reports of a model before and after it changed it: ``top1`` on the
    ImageTensors ``test`` under ``protocol`` (None without test data), the ``protocol``,
    ``parameters`` and ``macs`` at ``image_size``; with ``speed``, ``images_per_s`` of fp32
    eval forward passes of batch 64 on this CPU (after warm-up). Leaves ``model`` in eval
    mode."""
    model.eval()
    top1 = evaluate_data(model, test, protocol)["top1"] if test is not None else None
    out = {"top1": top1, "protocol": protocol.to_dict(), "parameters": count_parameters(model),
           "macs": count_macs(model, image_size)}
    if speed:
        batch = torch.randn(64, 3, *image_size)
        out["images_per_s"] = time_forward(model, batch, warmup=2, iters=5)["images_per_s"]
    return out


def default_work_dir(output_path: str | os.PathLike, kind: str) -> Path:
    """Where a command's fine-tuning runs go unless told: ``runs/<output stem>-<kind>``, in the
    folder that ``train`` puts its runs in, not beside the output file."""
    runs = TrainConfig.__dataclass_fields__["out_dir"].default
    return Path(runs) / f"{Path(output_path).stem}-{kind}"


def fresh_run_dir(path: str | os.PathLike, log: Callable[[str], None]) -> Path:
    """``path`` made free for a new training run: the same output made again replaces its
    earlier run, as ``compress`` does (``train`` into an existing run directory would refuse,
    asking for ``--resume``). Says so through ``log`` when it removes one."""
    path = Path(path)
    if path.exists():
        log(f"replacing the earlier run {path}")
        shutil.rmtree(path)
    return path


def _checkpoint_meta(checkpoint: Mapping[str, Any] | str | os.PathLike | None) -> dict:
    if checkpoint is None:
        return {}
    if isinstance(checkpoint, Mapping):
        return dict(checkpoint)
    return load_checkpoint(resolve_checkpoint(checkpoint)).meta


def fine_tune_train_section(checkpoint: Mapping[str, Any] | str | os.PathLike | None,
                            overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """TrainConfig fields for the fine-tuning runs of a checkpoint (``checkpoint``: its meta
    or its path): the ``INHERITED_TRAIN_FIELDS`` of the config it was trained with, a cosine
    schedule unless that says otherwise, no warm-up (the model is trained already), then
    ``overrides`` (None values are left out: a flag not given)."""
    saved = dict(_checkpoint_meta(checkpoint).get("config") or {})
    known = set(TrainConfig.field_names())
    out = {k: saved[k] for k in INHERITED_TRAIN_FIELDS if k in saved and k in known}
    out.setdefault("schedule", "cosine")
    out["warmup_epochs"] = 0.0
    out.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return out


__all__ = ["DENSE_TEACHER", "INHERITED_TRAIN_FIELDS", "RUN_FIELDS", "FineTuningDistillConfig",
           "check_retraining", "check_train_section", "default_work_dir", "distillation_hooks",
           "fine_tune_train_section", "fresh_run_dir", "fine_tuning_config", "fine_tuning_distill",
           "measure_model"]
