"""The ``distill`` cell: a student trained from scratch with a teacher's help, the teacher being
the model ``teacher`` names (a checkpoint, or ``{cell: ...}``: a train cell's best).

``method``:
  * ``labels``: labels only (the teacher is scored beside it, not used): the baseline;
  * ``kd``: knowledge distillation at ``temperature`` with weight ``alpha`` on the soft term
    (Hinton, Vinyals & Dean, arXiv 1503.02531; ``train/distill.py``'s DistillHook);
  * ``logits``: logit matching (Ba & Caruana, arXiv 1312.6184), KD's high-temperature limit;
  * ``fitnets``: FitNets hints (Romero et al., arXiv 1412.6550; ``workflows/fitnets.py``): stage
    1 trains the student up to its ``guided`` layer to predict the teacher's ``hint`` layer for
    ``stage1_epochs``, stage 2 trains it whole with KD at ``temperature`` (the paper's 3) and a
    weight falling from ``lambda_start`` to ``lambda_end``.

Recipe values: those above (a method's own settings only: ``hint`` for kd is an error; but
``stage1_epochs`` is a length a budget may set for every cell, read by fitnets alone),
``train`` (the student's TrainConfig fields, model included; the data, its subsets and image
size default to the teacher's, so the student learns from the images the teacher was trained
on), ``test_time_flip``. The record is a train cell's (accuracies, curves, sizes, timings) with
the teacher's top-1 (fp32, as ``squeezelab eval`` scores it) and the method's settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from squeezelab.config import ConfigBase, ConfigError
from squeezelab.train.config import data_seed_of
from squeezelab.train.distill import DistillConfig, DistillHook
from squeezelab.train.loop import TrainingDiverged, train
from squeezelab.workflows.fitnets import FitNetsConfig, fitnets_train
from squeezelab.workflows.studies.kinds.train import training_record
from squeezelab.workflows.studies.model_cells import (
    check_train_section,
    data_for,
    fresh_or_resume,
    load_source,
    place_seed,
    protocol_for,
    resumed_config,
    source_checkpoint,
    source_score,
    train_config,
)
from squeezelab.workflows.studies.registry import CellContext, CellInterrupted, register_cell_kind

METHODS = ("labels", "kd", "logits", "fitnets")
#: the settings each method reads, and their defaults (None in the recipe: the default)
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "labels": {},
    "kd": {"temperature": 4.0, "alpha": 0.9},
    "logits": {"alpha": 0.9},
    "fitnets": {"hint": None, "guided": None, "stage1_epochs": 10, "temperature": 3.0,
                "lambda_start": 4.0, "lambda_end": 1.0},
}
#: lengths a budget may set for every cell of a study (only the method that reads one does)
LENGTHS = ("stage1_epochs",)
#: the settings only some methods take: given to another method they are an error
OPTIONAL = sorted({k for v in METHOD_SETTINGS.values() for k in v} - set(LENGTHS))
#: TrainConfig fields of the teacher's config a student inherits unless its train: sets them
TEACHER_DATA_FIELDS = ("data", "data_root", "image_size", "limit_train", "limit_test",
                       "skip_bad_images")
FIXED_TRAIN_FIELDS = ("init_from", "seed", "out_dir", "run_name")


@dataclass
class DistillCellSettings(ConfigBase):
    """A ``distill`` cell (see the module docstring); ``seed`` is placed by the study."""

    teacher: str
    method: str = "kd"
    temperature: float | None = None
    alpha: float | None = None
    hint: str | None = None
    guided: str | None = None
    stage1_epochs: int | None = None
    lambda_start: float | None = None
    lambda_end: float | None = None
    train: dict[str, Any] = field(default_factory=dict)
    test_time_flip: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, str) or not self.teacher:
            raise ConfigError(f"teacher must be a checkpoint path or {{cell: ...}}, got "
                              f"{self.teacher!r}")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got "
                              f"{self.method!r}")
        used = METHOD_SETTINGS[self.method]
        stray = [k for k in OPTIONAL if k not in used and getattr(self, k) is not None]
        if stray:
            raise ConfigError(f"method {self.method} does not use {', '.join(stray)} (it "
                              f"reads {', '.join(used) or 'no teacher setting'}); remove "
                              f"{'it' if len(stray) == 1 else 'them'}")
        self.train = check_train_section(self.train, "distill", FIXED_TRAIN_FIELDS)
        self.method_config("teacher")  # a bad value fails when the study is planned

    def resolved(self) -> dict[str, Any]:
        """The method's settings with the defaults filled in."""
        return {k: (default if getattr(self, k) is None else getattr(self, k))
                for k, default in METHOD_SETTINGS[self.method].items()}

    def method_config(self, teacher: str) -> DistillConfig | FitNetsConfig | None:
        """The DistillConfig (kd, logits) or FitNetsConfig (fitnets) of the method."""
        values = self.resolved()
        if self.method in ("kd", "logits"):
            return DistillConfig.from_dict({"teacher": teacher, "mode": self.method, **values},
                                           source=f"method {self.method}")
        if self.method == "fitnets":
            missing = [k for k in ("hint", "guided") if values[k] is None]
            if missing:
                raise ConfigError(f"method fitnets needs {' and '.join(missing)} (the "
                                  "teacher's hint layer and the student's guided layer, module "
                                  "paths such as layer2 and features.6)")
            return FitNetsConfig.from_dict({"teacher": teacher, **values},
                                           source="method fitnets")
        return None


@register_cell_kind("distill", settings=DistillCellSettings, prepare=place_seed,
                    failures=(TrainingDiverged,))
def run_distill_cell(settings: DistillCellSettings, ctx: CellContext) -> dict[str, Any]:
    """Train the student in the cell's run folder (kd, logits and labels resume an interrupted
    run; fitnets starts its two stages again) and return its record."""
    checkpoint = source_checkpoint(settings.teacher)
    teacher = load_source(settings.teacher, "teacher")
    saved = teacher.meta.get("config") or {}
    inherited = {k: saved[k] for k in TEACHER_DATA_FIELDS if k in saved}
    if "seed" in saved or "subset_seed" in saved:
        inherited["subset_seed"] = data_seed_of(dict(saved))
    cfg = train_config({**inherited, **settings.train, "seed": settings.seed}, ctx,
                       f"cell {ctx.name}")
    method = settings.method_config(str(checkpoint))
    resume = fresh_or_resume(ctx.run_dir, resumable=settings.method != "fitnets")
    if resume:
        cfg = resumed_config(cfg, ctx.run_dir)
    data = data_for(cfg, ctx)
    protocol = protocol_for(teacher.meta, settings.test_time_flip)
    teacher_score = source_score(checkpoint, teacher.model, data.test, protocol, ctx)
    stage1 = None
    if settings.method == "fitnets":
        stage1, result = fitnets_train(cfg, method, data=data, run_dir=ctx.run_dir,
                                       teacher=teacher.model)
    else:
        hooks = [DistillHook(method, teacher=teacher.model)] if method is not None else []
        result = train(cfg, hooks=hooks, data=data, run_dir=ctx.run_dir, resume=resume)
    if result.interrupted or (stage1 is not None and stage1.interrupted):
        raise CellInterrupted(f"cell {ctx.name} stopped in {ctx.run_dir}")
    record = training_record(result, data, ctx.run_dir, resume, extra_curve_keys=("kd_lambda",))
    record["metrics"]["teacher_top1"] = teacher_score["top1"]
    record["metrics"]["teacher_top5"] = teacher_score["top5"]
    record["metrics"]["teacher_protocol"] = protocol.to_dict()
    record["source"] = {"path": str(checkpoint), "top1": teacher_score["top1"],
                        "protocol": protocol.to_dict()}
    record["distill"] = {"method": settings.method, **settings.resolved()}
    if stage1 is not None:
        record["stage1"] = {"epochs": len(stage1.history),
                            "hint_loss": stage1.final.get("train_loss"),
                            "run_dir": str(stage1.run_dir)}
    return record


__all__ = ["DistillCellSettings", "run_distill_cell"]
