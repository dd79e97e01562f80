"""The settings of the Deep Compression pipeline (``deep_compression.py``): ``CompressConfig``,
and ``compress_config_for``, which merges a recipe, a checkpoint's own training settings and
command-line overrides into one (the ``compress`` command and ``benchmarks/compress_cifar.py``
both build their config with it, so both write the same file).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from squeezelab.compress.format.layout import CODER_CHOICES, FLOAT_DTYPES
from squeezelab.compress.pruning.magnitude import PruneConfig
from squeezelab.compress.pruning.schedules import PRUNE_SCHEDULES
from squeezelab.compress.quantization.weight_sharing import WeightSharingConfig
from squeezelab.config import ConfigBase
from squeezelab.train.config import TrainConfig
from squeezelab.train.distill import DistillConfig
from squeezelab.workflows.fine_tuning import (
    FineTuningDistillConfig,
    check_train_section,
    fine_tune_train_section,
)


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_positive(name: str, value: Any, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (value >= 0 if allow_zero else value > 0):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return float(value)


@dataclass
class CompressConfig(ConfigBase):
    """Settings of every step of the pipeline (a recipe's ``compress:`` section).

    prune: a PruneConfig (``sparsity`` and/or per-layer ``rules``, ``scope``, ``exclude``), the
        final target; None skips pruning.
    prune_rounds: prune -> retrain rounds reaching the final target (``prune_schedule``:
        "geometric" prunes the same fraction of the kept weights each round, or "linear");
        "gradual" spends the same epochs (rounds x retrain_epochs) as one run whose sparsity
        rises along Zhu & Gupta's cubic curve (``deep_compression._prune_gradually``).
    retrain_epochs / retrain_lr: the retraining run after each pruning round (0 epochs: prune
        only).
    sharing: a WeightSharingConfig (bits per layer type or glob, e.g. conv 8 / classifier 5 as
        in the paper); None skips weight sharing (the .sqz then stores pruned dense tensors).
    centroid_epochs / centroid_lr / centroid_weight_decay: the fine-tuning run over the
        codebooks (0 epochs: no fine-tuning). Decay defaults to 0: it would pull centroids,
        not individual weights, toward zero.
    reassign_weights: the centroid run also trains every kept weight's own float value by a
        straight-through estimator and moves each weight to its cheapest cluster before every
        step (``quantization/reassign.py``), where the paper's fine-tuning keeps each weight
        in the cluster the sharing gave it; the rate stays priced as the sharing priced it.
    gap_bits: bits per relative position in the .sqz (None: 8 for conv, 5 for linear, the
        paper's choice).
    fold_batchnorm: fold BatchNorm into the convs after pruning, before sharing (``fold.py``):
        one bias per channel ships instead of four BatchNorm tensors.
    coder: the entropy coder of the .sqz streams: "auto" (per layer, the smaller of huffman
        and ans), "huffman" (the paper's), "ans" (rANS, ``coding/ans.py``), "adaptive"
        (models learnt while decoding, ``coding/adaptive.py``: smallest, slower to load) or
        "smallest" (per layer, the smallest of the three).
    float_dtype: the precision of the floats the .sqz stores (biases, BatchNorm tensors,
        codebooks): "float32", or "float16"/"bfloat16" for half their bytes. The model is
        rounded to it before the last evaluation, so the reported top-1 is the file's.
    dense_bits: store the dense floats (biases, BatchNorm tensors) as per-tensor uniform
        levels of this many bits (``uniform_levels.py``; None: in ``float_dtype``). Rounded
        before the last evaluation too.
    int8_calibration: measure the activation ranges of the final model on this many training
        images and store them in the file (``squeezelab.int8``), so that the file alone runs
        as int8 (``load_model(path, int8=True)``, ``eval --int8``); the int8 model is scored
        as the pipeline's last step. 0: no calibration.
    distill: a DistillConfig: every retraining and centroid run learns from a teacher's
        softened outputs as well as the labels (Hinton et al.'s KD, or logit matching).
        ``teacher: dense`` (the default) is the model being compressed, as it was before
        pruning: the pruned and shared model is pulled back toward what it was (as in Mishra
        & Marr's Apprentice, arXiv 1711.05852); a checkpoint path names another teacher. None:
        labels only, as in the paper.
    train: TrainConfig fields for the fine-tuning runs (batch_size, optimizer, data,
        limit_train, precision ...), except the per-phase epochs/lr/run_name/out_dir/model.

    ``from_dict`` / ``to_dict`` (every field: the .sqz header records them all) and
    ``from_yaml`` (the ``compress:`` section) come from ``ConfigBase``; ``compress_config_for``
    merges a recipe, a checkpoint's own training settings and command-line overrides.
    """

    recipe_section = "compress"

    prune: PruneConfig | None = field(default_factory=lambda: PruneConfig(sparsity=0.5))
    prune_rounds: int = 1
    prune_schedule: str = "geometric"
    retrain_epochs: int = 1
    retrain_lr: float = 0.01
    sharing: WeightSharingConfig | None = field(default_factory=WeightSharingConfig)
    centroid_epochs: int = 1
    centroid_lr: float = 1e-3
    centroid_weight_decay: float = 0.0
    reassign_weights: bool = False
    gap_bits: int | None = None
    fold_batchnorm: bool = False
    coder: str = "auto"
    float_dtype: str = "float32"
    dense_bits: int | None = None
    int8_calibration: int = 0
    distill: FineTuningDistillConfig | None = None
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.prune, Mapping):
            self.prune = PruneConfig.from_dict(self.prune)
        if isinstance(self.sharing, Mapping):
            self.sharing = WeightSharingConfig.from_dict(self.sharing)
        if self.prune is not None and not isinstance(self.prune, PruneConfig):
            raise ValueError(f"prune must be a PruneConfig, a mapping or None, got "
                             f"{type(self.prune).__name__}")
        if self.sharing is not None and not isinstance(self.sharing, WeightSharingConfig):
            raise ValueError(f"sharing must be a WeightSharingConfig, a mapping or None, got "
                             f"{type(self.sharing).__name__}")
        _check_int("prune_rounds", self.prune_rounds, 1)
        if self.prune_schedule not in PRUNE_SCHEDULES:
            raise ValueError(f"prune_schedule must be one of {PRUNE_SCHEDULES}, got "
                             f"{self.prune_schedule!r}")
        _check_int("retrain_epochs", self.retrain_epochs, 0)
        _check_int("centroid_epochs", self.centroid_epochs, 0)
        self.retrain_lr = _check_positive("retrain_lr", self.retrain_lr)
        self.centroid_lr = _check_positive("centroid_lr", self.centroid_lr)
        self.centroid_weight_decay = _check_positive(
            "centroid_weight_decay", self.centroid_weight_decay, allow_zero=True)
        if not isinstance(self.reassign_weights, bool):
            raise ValueError(f"reassign_weights must be true or false, got "
                             f"{self.reassign_weights!r}")
        if self.gap_bits is not None:
            _check_int("gap_bits", self.gap_bits, 1)
            if self.gap_bits > 16:
                raise ValueError(f"gap_bits must be in 1..16 or None, got {self.gap_bits}")
        if self.coder not in CODER_CHOICES:
            raise ValueError(f"coder must be one of {CODER_CHOICES}, got {self.coder!r}")
        if self.float_dtype not in FLOAT_DTYPES:
            raise ValueError(f"float_dtype must be one of {FLOAT_DTYPES}, got "
                             f"{self.float_dtype!r}")
        if self.dense_bits is not None:
            _check_int("dense_bits", self.dense_bits, 1)
            if self.dense_bits > 16:
                raise ValueError(f"dense_bits must be in 1..16 or None, got {self.dense_bits}")
        _check_int("int8_calibration", self.int8_calibration, 0)
        if isinstance(self.distill, Mapping):
            self.distill = FineTuningDistillConfig.from_dict(self.distill, source="distill")
        if self.distill is not None and not isinstance(self.distill, DistillConfig):
            raise ValueError(f"distill must be a DistillConfig, a mapping or None, got "
                             f"{type(self.distill).__name__}")
        self.train = check_train_section(
            self.train, "the pipeline",
            "per phase: retrain_epochs, retrain_lr, centroid_epochs, centroid_lr")
        self.train_config("check")  # unknown or bad TrainConfig values fail now, not mid-run

    def train_config(self, run_name: str, epochs: int = 1, lr: float | None = None,
                     **changes: Any) -> TrainConfig:
        """The TrainConfig of one fine-tuning phase."""
        values = {**self.train, "epochs": max(1, epochs), "run_name": run_name, **changes}
        if lr is not None:
            values["lr"] = lr
        return TrainConfig.from_dict(values, source="compress config 'train' section")


def _merged(base: Mapping[str, Any] | None, changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``changes``; a mapping value (prune ``rules``, sharing ``bits``) is
    merged key by key, so one flag changes one layer's rule and keeps the others."""
    out = dict(base or {})
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def compress_config_for(checkpoint: Mapping[str, Any] | str | os.PathLike | None,
                        recipe: str | os.PathLike | None = None,
                        overrides: Mapping[str, Any] | None = None) -> CompressConfig:
    """The CompressConfig that compresses ``checkpoint`` (its meta, or its path): the one
    function the ``compress`` command and ``benchmarks/compress_cifar.py`` both build it with,
    so both write the same file from the same checkpoint and recipe.

    Later wins: CompressConfig's defaults (or the ``recipe``'s ``compress:`` section), then
    ``overrides``: CompressConfig fields to change (only those given: a flag left out is not
    a key). ``"prune"`` / ``"sharing"``: None skips the step, a mapping changes the recipe's
    settings (``rules`` and ``bits`` merged per layer; a step the recipe skips starts from
    the defaults). The fine-tuning runs' ``train`` fields: the checkpoint's own training
    settings (``fine_tune_train_section``), then the recipe's ``train:``, then
    ``overrides["train"]``.
    """
    base = CompressConfig.from_yaml(recipe) if recipe else CompressConfig()
    values = base.to_dict()
    changes = dict(overrides or {})
    defaults = CompressConfig().to_dict()
    for step in ("prune", "sharing"):
        if step in changes:
            change = changes.pop(step)
            values[step] = None if change is None else _merged(
                values[step] or defaults[step], change)
    values["train"] = {**fine_tune_train_section(checkpoint), **values["train"],
                       **(changes.pop("train", None) or {})}
    values.update(changes)
    source = f"{recipe} compress: with the overrides" if recipe else "compress options"
    return CompressConfig.from_dict(values, source=source)


__all__ = ["CompressConfig", "compress_config_for"]
