"""FitNets: Romero et al., "FitNets: Hints for Thin Deep Nets" (arXiv 1412.6550).

Stage 1 trains the student up to a *guided* layer, plus a convolutional regressor on top of
it, to predict the teacher's *hint* layer (L2 loss). Stage 2 trains the whole student with
knowledge distillation, ``CE(y, P_s) + lambda * H(P_t^tau, P_s^tau)`` with tau = 3 and lambda
decaying linearly from 4 to 1 over the stage (the paper's section 2.2 and 4.1).

Both stages run through the one training loop (``train()``). For stage 1 the student and the
regressor are wrapped in one ``HintModel`` module: that way the loop's optimizer (built from
``model.parameters()``) updates the regressor with the student, DDP all-reduces the regressor's
gradients like any other, and the stage-1 checkpoint holds it. The student's parameters past
the guided layer are frozen (``requires_grad=False``) during stage 1: the hint loss does not
reach them, so the optimizer would only apply weight decay to them, and DDP would wait forever
for their gradients. Which parameters lie "before" the guided layer is found by autograd on a
probe forward, not by module order, so branches and bypasses are handled.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.config import ConfigBase
from squeezelab.hooks import TrainHook, TrainState
from squeezelab.train.config import TrainConfig
from squeezelab.train.distill import (
    TEMPERATURE_ALIASES,
    DistillError,
    check_same_classes,
    freeze,
    load_teacher,
)


@dataclass
class FitNetsConfig(ConfigBase):
    """``teacher``: checkpoint path; ``hint``: module path in the teacher (e.g. "layer3");
    ``guided``: module path in the student (e.g. "features.6"); ``stage1_epochs``: epochs of
    hint training (stage 2 runs the train config's ``epochs``); ``temperature`` tau (``T`` and
    ``tau`` accepted) and the KD weight ``lambda_start`` -> ``lambda_end`` (linear over stage
    2's steps). ``from_dict`` (a recipe's ``fitnets:`` section) / ``to_dict`` come from
    ``ConfigBase``; ``parse`` reads the ``--fitnets`` form."""

    recipe_section = "fitnets"
    aliases = TEMPERATURE_ALIASES
    config_error = DistillError

    teacher: str
    hint: str
    guided: str
    stage1_epochs: int = 10
    temperature: float = 3.0
    lambda_start: float = 4.0
    lambda_end: float = 1.0

    def __post_init__(self) -> None:
        for key in ("teacher", "hint", "guided"):
            value = getattr(self, key)
            if not isinstance(value, (str, Path)) or not str(value):
                raise DistillError(f"fitnets {key} must be a non-empty string, got {value!r}")
            setattr(self, key, str(value))
        if isinstance(self.stage1_epochs, bool) or not isinstance(self.stage1_epochs, int) \
                or self.stage1_epochs < 1:
            raise DistillError(f"stage1_epochs must be a positive integer, got "
                               f"{self.stage1_epochs!r}")
        for key in ("temperature", "lambda_start", "lambda_end"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DistillError(f"fitnets {key} must be a number, got {value!r}")
        if not self.temperature > 0:
            raise DistillError(f"temperature must be > 0, got {self.temperature}")
        if self.lambda_start < 0 or self.lambda_end < 0:
            raise DistillError(f"lambda_start and lambda_end must be >= 0, got "
                               f"{self.lambda_start}, {self.lambda_end}")

    @classmethod
    def parse(cls, text: str) -> FitNetsConfig:
        """From ``teacher=PATH,hint=layer3,guided=features.6,stage1_epochs=N``."""
        return cls.from_key_values(text, "--fitnets")


# --- pure pieces ------------------------------------------------------------------------------
def find_module(model: nn.Module, name: str, role: str = "model") -> nn.Module:
    """``model``'s submodule at path ``name``; an unknown name lists the candidates, close
    matches first."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    ordered = close + [n for n in names if n not in close]
    shown = ", ".join(ordered[:30]) + (f", ... ({len(ordered)} in all)" if len(ordered) > 30
                                       else "")
    raise DistillError(f"the {role} ({type(model).__name__}) has no module {name!r}; "
                       f"candidates: {shown}")


def regressor_kernel(guided_hw: tuple[int, int], hint_hw: tuple[int, int]) -> tuple[int, int]:
    """Kernel (kh, kw) of the regressor conv that maps the guided map onto the hint map's size
    with no padding and stride 1: ``guided - hint + 1`` per dimension (1 when equal)."""
    if any(g < h for g, h in zip(guided_hw, hint_hw)):
        raise DistillError(f"the hint map {tuple(hint_hw)} is larger than the guided map "
                           f"{tuple(guided_hw)}: choose a deeper hint layer or a shallower "
                           "guided layer (the regressor can only shrink the guided map)")
    return tuple(g - h + 1 for g, h in zip(guided_hw, hint_hw))


def make_regressor(guided_shape: tuple[int, ...], hint_shape: tuple[int, ...]) -> nn.Conv2d:
    """A conv from the guided (C, H, W) activation to the hint's (C, H, W)."""
    if len(guided_shape) != 3 or len(hint_shape) != 3:
        raise DistillError(f"guided and hint layers must output (N, C, H, W) maps, got "
                           f"per-sample shapes {tuple(guided_shape)} and {tuple(hint_shape)}")
    kernel = regressor_kernel(guided_shape[1:], hint_shape[1:])
    return nn.Conv2d(guided_shape[0], hint_shape[0], kernel_size=kernel)


def hint_loss(regressed: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
    """``1/2 ||u_h - r(v_g)||^2`` (eq. 3), averaged over the batch and the map's elements so the
    learning rate does not depend on the hint's size."""
    if regressed.shape != hint.shape:
        raise DistillError(f"regressor output {tuple(regressed.shape)} and hint "
                           f"{tuple(hint.shape)} differ in shape")
    return 0.5 * (regressed.float() - hint.float()).square().mean()


def fitnets_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    labels: torch.Tensor, temperature: float, weight: float) -> torch.Tensor:
    """``CE(y, P_s) + weight * H(P_t^tau, P_s^tau)`` (FitNets eq. 2): the soft term is the
    cross-entropy of the softened teacher and student distributions, averaged over the batch."""
    tau = float(temperature)
    p_teacher = F.softmax(teacher_logits.float() / tau, dim=1)
    soft = -(p_teacher * F.log_softmax(student_logits.float() / tau, dim=1)).sum(1).mean()
    return F.cross_entropy(student_logits.float(), labels) + weight * soft


def linear_weight(step: int, total_steps: int, start: float, end: float) -> float:
    """``start`` at step 0 falling linearly to ``end`` at the last step (``total_steps - 1``)."""
    if total_steps <= 1:
        return float(start)
    frac = min(max(step / (total_steps - 1), 0.0), 1.0)
    return float(start + (end - start) * frac)


# --- stage 1 ----------------------------------------------------------------------------------
class _Capture:
    """A forward hook keeping a module's latest output."""

    def __init__(self, module: nn.Module):
        self.output: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.output = output

    def remove(self) -> None:
        self.handle.remove()
        self.output = None


class HintModel(nn.Module):
    """Stage-1 wrapper: ``forward`` returns the student's logits (so the loop's accuracy and
    evaluation still work) and keeps ``regressed`` = regressor(guided activation)."""

    def __init__(self, student: nn.Module, guided: str, regressor: nn.Module):
        super().__init__()
        self.student = student
        self.regressor = regressor
        self.guided = guided
        self._capture = _Capture(find_module(student, guided, "student"))
        self.regressed: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.student(x)
        # inside forward, so DDP sees the regressor's use as part of the wrapped module
        self.regressed = self.regressor(self._capture.output)
        return logits

    def release(self) -> nn.Module:
        """Remove the capture hook; returns the student."""
        self._capture.remove()
        self.regressed = None
        return self.student


def probe_shapes(student: nn.Module, teacher: nn.Module, guided: str, hint: str,
                 sample: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...], list[str]]:
    """(guided per-sample shape, hint per-sample shape, names of the student's parameters that
    the guided activation depends on), from one eval-mode forward of ``sample``."""
    g_cap = _Capture(find_module(student, guided, "student"))
    h_cap = _Capture(find_module(teacher, hint, "teacher"))
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            teacher(sample)
        with torch.enable_grad():
            student(sample)
        g_out, h_out = g_cap.output, h_cap.output
        named = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(g_out.float().sum(), [p for _, p in named],
                                    allow_unused=True)
        before = [n for (n, _), g in zip(named, grads) if g is not None]
    finally:
        g_cap.remove()
        h_cap.remove()
        student.train(was_training)
    return tuple(g_out.shape[1:]), tuple(h_out.shape[1:]), before


class HintHook(TrainHook):
    """Stage 1: the loss is ``hint_loss(regressor(guided), teacher's hint)``; the model the loop
    trains must be a ``HintModel``."""

    name = "fitnets_hint"

    def __init__(self, teacher: nn.Module, hint: str):
        self.teacher = freeze(teacher)
        self.hint = hint
        self._capture: _Capture | None = None

    def on_train_start(self, state: TrainState) -> None:
        if not isinstance(state.model, HintModel):
            raise DistillError(f"HintHook trains a HintModel, got {type(state.model).__name__}")
        self.teacher.to(state.device)
        if state.config.channels_last:
            self.teacher.to(memory_format=torch.channels_last)
        self._capture = _Capture(find_module(self.teacher, self.hint, "teacher"))

    def loss(self, state: TrainState, images: torch.Tensor, labels: torch.Tensor,
             logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.teacher.eval()
            self.teacher(images)
        return hint_loss(state.model.regressed, self._capture.output)

    def on_train_end(self, state: TrainState) -> None:
        if self._capture is not None:
            self._capture.remove()
            self._capture = None


# --- stage 2 ----------------------------------------------------------------------------------
class FitNetsKDHook(TrainHook):
    """Stage 2: the loss is ``fitnets_kd_loss`` with the weight decaying linearly over the run."""

    name = "fitnets_kd"

    def __init__(self, teacher: nn.Module, temperature: float = 3.0, lambda_start: float = 4.0,
                 lambda_end: float = 1.0):
        self.teacher = freeze(teacher)
        self.temperature = temperature
        self.lambda_start, self.lambda_end = lambda_start, lambda_end
        self.weight = lambda_start

    def on_train_start(self, state: TrainState) -> None:
        check_same_classes(self.teacher, state.model)
        self.teacher.to(state.device)
        if state.config.channels_last:
            self.teacher.to(memory_format=torch.channels_last)

    def loss(self, state: TrainState, images: torch.Tensor, labels: torch.Tensor,
             logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        total = state.config.epochs * state.steps_per_epoch
        self.weight = linear_weight(state.step, total, self.lambda_start, self.lambda_end)
        with torch.no_grad():
            self.teacher.eval()
            teacher_logits = self.teacher(images).float()
        return fitnets_kd_loss(logits, teacher_logits, labels, self.temperature, self.weight)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        metrics["kd_lambda"] = self.weight


# --- both stages ------------------------------------------------------------------------------
def build_hint_model(student: nn.Module, teacher: nn.Module, guided: str, hint: str,
                     sample: torch.Tensor) -> tuple[HintModel, list[str]]:
    """Wrap ``student`` with a regressor sized by a probe forward of ``sample``; returns the
    wrapper and the names of the student parameters trained in stage 1 (up to ``guided``)."""
    guided_shape, hint_shape, before = probe_shapes(student, teacher, guided, hint, sample)
    regressor = make_regressor(guided_shape, hint_shape)
    return HintModel(student, guided, regressor), before


def fitnets_train(cfg: TrainConfig, fit: FitNetsConfig, *, data: tuple[Any, Any] | None = None,
                  run_dir: str | Path | None = None, model: nn.Module | None = None,
                  teacher: nn.Module | None = None, hooks=()):
    """Run both FitNets stages; returns ``(stage1 RunResult, stage2 RunResult)``.

    Stage 1 (``fit.stage1_epochs`` epochs) writes ``RUN/stage1_hints``; stage 2 (``cfg.epochs``)
    writes ``RUN`` itself. ``hooks`` (e.g. masks) join stage 2.
    """
    from squeezelab.checkpoint import read_weights
    from squeezelab.train.loop import build_run_model, train
    from squeezelab.train.resume import default_run_name

    teacher = freeze(teacher) if teacher is not None else load_teacher(fit.teacher)
    if data is None:
        data = _load_data(cfg)
    train_data = data[0]
    torch.manual_seed(cfg.seed)  # the student's and the regressor's initial weights
    if model is None:
        weights = read_weights(cfg.init_from) if cfg.init_from else None
        model = build_run_model(cfg, train_data.num_classes, weights, announce=cfg.progress)
    check_same_classes(teacher, model)
    sample = torch.zeros((2, *train_data.images.shape[1:]), dtype=torch.float32)
    wrapper, before = build_hint_model(model, teacher, fit.guided, fit.hint, sample)
    base = Path(run_dir) if run_dir else Path(cfg.out_dir) / (cfg.run_name or
                                                              default_run_name(cfg))
    frozen = [p for n, p in model.named_parameters() if p.requires_grad and n not in before]
    for p in frozen:
        p.requires_grad_(False)
    try:
        stage1 = train(cfg.replace(epochs=fit.stage1_epochs, warmup_epochs=0.0),
                       hooks=[HintHook(teacher, fit.hint)], model=wrapper, data=data,
                       run_dir=base / "stage1_hints")
    finally:
        for p in frozen:
            p.requires_grad_(True)
        wrapper.release()
    kd = FitNetsKDHook(teacher, fit.temperature, fit.lambda_start, fit.lambda_end)
    stage2 = train(cfg, hooks=[kd, *hooks], model=model, data=data, run_dir=base)
    return stage1, stage2


def _load_data(cfg: TrainConfig):
    """(train, test) ImageTensors as ``train()`` would load them (once, for both stages)."""
    import os

    from squeezelab.train.data import load_run_data

    return load_run_data(cfg, is_main=os.environ.get("RANK", "0") == "0")


__all__ = ["FitNetsConfig", "find_module", "regressor_kernel", "make_regressor", "hint_loss",
           "fitnets_kd_loss", "linear_weight", "HintModel", "HintHook", "FitNetsKDHook",
           "build_hint_model", "probe_shapes", "fitnets_train"]
