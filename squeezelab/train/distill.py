"""Knowledge distillation: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
Network" (arXiv 1503.02531), and plain logit matching (Ba & Caruana 2014, arXiv 1312.6184),
which the KD paper shows is KD's high-temperature limit.

``kd_loss`` and ``logit_matching_loss`` are pure functions of logits; ``DistillHook`` plugs a
frozen teacher into the one training loop by replacing the step's loss. The teacher is any
registered model loaded from a squeezelab checkpoint (or passed in as a module): eval mode,
``requires_grad=False``, run under ``no_grad`` on the student's device and memory format.
Under DDP the teacher is not wrapped: every rank runs it on its own shard.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.config import ConfigBase, ConfigError
from squeezelab.hooks import TrainHook, TrainState

MODES = ("kd", "logits")


class DistillError(ConfigError):
    """A distillation setting, teacher or student that cannot work together."""


#: Short names accepted for ``temperature`` in CLI strings and recipe sections.
TEMPERATURE_ALIASES = {"T": "temperature", "tau": "temperature"}


@dataclass
class DistillConfig(ConfigBase):
    """``teacher``: checkpoint (stem, .json, .safetensors) or run directory (its best
    checkpoint). ``temperature`` T > 0 softens both softmaxes; ``alpha`` in [0, 1] weighs the
    soft term against the hard-label cross-entropy. ``mode``: "kd" (KL of the softened
    distributions, Hinton et al.) or "logits" (squared error on the pre-softmax outputs).

    ``from_dict`` (a recipe's ``distill:`` section; ``T`` or ``tau`` for ``temperature``) /
    ``to_dict`` come from ``ConfigBase``; ``parse`` reads the ``--distill`` form.
    """

    recipe_section = "distill"
    aliases = TEMPERATURE_ALIASES
    config_error = DistillError

    teacher: str
    temperature: float = 4.0
    alpha: float = 0.9
    mode: str = "kd"

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, (str, Path)) or not str(self.teacher):
            raise DistillError(f"teacher must be a checkpoint path, got {self.teacher!r}")
        self.teacher = str(self.teacher)
        for name in ("temperature", "alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DistillError(f"{name} must be a number, got {value!r}")
        if not self.temperature > 0:
            raise DistillError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise DistillError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.mode not in MODES:
            raise DistillError(f"mode must be one of {MODES}, got {self.mode!r}")

    @classmethod
    def normalize_input(cls, values: Mapping[str, Any], source: str) -> dict[str, Any]:
        values = super().normalize_input(values, source)
        if "teacher" not in values:
            raise DistillError(f"{source}: teacher=PATH (a teacher checkpoint) is required")
        return values

    @classmethod
    def parse(cls, text: str) -> DistillConfig:
        """From the CLI form ``teacher=PATH,T=4,alpha=0.9[,mode=kd]``."""
        return cls.from_key_values(text, "--distill")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) * CE(y, z_s)``.

    Logits are (N, classes), labels int64 (N,); KL and CE are means over the batch. The T^2
    keeps the soft term's gradients the same size as T changes (Hinton et al., section 2).
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    # KL(p_t || p_s) = sum_c p_t (log p_t - log p_s), averaged over the batch
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits.float(), labels)
    return alpha * t * t * soft + (1.0 - alpha) * hard


def logit_matching_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                        labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * mean_n 1/2 sum_c (z_s - z_t)^2 + (1 - alpha) * CE(y, z_s)``.

    The squared error on pre-softmax outputs that KD tends to as T grows (with zero-mean
    logits; Hinton et al., section 2.1); the 1/2 and the sum over classes are that limit's.
    """
    diff = student_logits.float() - teacher_logits.float()
    soft = 0.5 * diff.square().sum(dim=1).mean()
    hard = F.cross_entropy(student_logits.float(), labels)
    return alpha * soft + (1.0 - alpha) * hard


def model_num_classes(model: nn.Module) -> int | None:
    """The class count of a registry model (its spec), else its ``num_classes`` attribute."""
    from squeezelab.models import unwrap_model

    model = unwrap_model(model)
    spec = getattr(model, "spec", None)
    if spec and "num_classes" in spec.get("kwargs", {}):
        return int(spec["kwargs"]["num_classes"])
    n = getattr(model, "num_classes", None)
    return int(n) if isinstance(n, int) else None


def load_teacher(path: str | Path) -> nn.Module:
    """A frozen teacher from a checkpoint or a run directory (its best, else last checkpoint)."""
    from squeezelab.checkpoint import (
        checkpoint_paths,
        model_from_checkpoint,
        resolve_checkpoint,
    )

    p = resolve_checkpoint(path)
    json_path, st_path = checkpoint_paths(p)
    if not json_path.is_file() or not st_path.is_file():
        raise FileNotFoundError(f"teacher checkpoint {path} does not exist (expected "
                                f"{json_path} and {st_path.name}, or a run directory)")
    teacher, _ = model_from_checkpoint(p)
    return freeze(teacher)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` on every parameter; returns ``model``."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def check_same_classes(teacher: nn.Module, student: nn.Module) -> None:
    """Raise DistillError when the teacher's and the student's class counts differ."""
    t, s = model_num_classes(teacher), model_num_classes(student)
    if t is not None and s is not None and t != s:
        raise DistillError(f"the teacher predicts {t} classes but the student {s}: "
                           "distillation needs the same classes (train the teacher on the "
                           "student's data)")


class DistillHook(TrainHook):
    """Replaces the step's loss by ``kd_loss`` (mode "kd") or ``logit_matching_loss``.

    The teacher is loaded when the hook is built, so a missing checkpoint fails before any
    training; the class counts are checked against the student in ``on_train_start``.
    """

    name = "distill"

    def __init__(self, config: DistillConfig, teacher: nn.Module | None = None):
        self.config = config
        self.teacher = freeze(teacher) if teacher is not None else load_teacher(config.teacher)

    def on_train_start(self, state: TrainState) -> None:
        check_same_classes(self.teacher, state.model)
        self.teacher.to(state.device)
        if state.config.channels_last:
            self.teacher.to(memory_format=torch.channels_last)
        freeze(self.teacher)

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()  # stays in eval mode whatever train() did to other modules
        return self.teacher(images).float()

    def loss(self, state: TrainState, images: torch.Tensor, labels: torch.Tensor,
             logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        teacher_logits = self.teacher_logits(images)
        if teacher_logits.shape != logits.shape:
            raise DistillError(f"teacher logits {tuple(teacher_logits.shape)} and student "
                               f"logits {tuple(logits.shape)} differ in shape")
        if self.config.mode == "logits":
            return logit_matching_loss(logits, teacher_logits, labels, self.config.alpha)
        return kd_loss(logits, teacher_logits, labels, self.config.temperature,
                       self.config.alpha)

    def state_dict(self) -> dict[str, Any]:
        # Nothing changes during training; recorded so a checkpoint says how it was made.
        return self.config.to_dict()

    def describe(self) -> str:
        c = self.config
        return (f"{self.name} (teacher {c.teacher}, T {c.temperature:g}, alpha {c.alpha:g}, "
                f"{c.mode})")
