"""Evaluation: top-1/top-5 accuracy, mean loss and per-class accuracy over a loader, and the
paired comparison of two models scored on the same images.

How a figure was scored is an :class:`EvalProtocol` (precision, flip-averaging): a command
chooses one and scores every model it reports with it, and prints ``protocol.describe()``
beside every top-1, because the same checkpoint scores differently under each (bf16 vs fp32,
with or without averaging each image with its mirror: a point or more on CIFAR-10).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.config import ConfigBase, ConfigError
from squeezelab.train.distributed import all_reduce_sum

#: the precisions a model can be scored in
EVAL_PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class EvalProtocol(ConfigBase):
    """How top-1 is measured: ``precision`` of the forward ("fp32" or "bf16" autocast) and
    ``flip`` (sum each image's logits with its mirror image's: test-time flip averaging).

    Figures are only comparable under one protocol; ``describe()`` is the label printed beside
    each of them ("fp32, no flip"), ``to_dict()`` what JSON outputs record beside them.
    """

    precision: str = "fp32"
    flip: bool = False

    def __post_init__(self) -> None:
        if self.precision not in EVAL_PRECISIONS:
            raise ConfigError(f"evaluation precision must be one of {EVAL_PRECISIONS}, got "
                              f"{self.precision!r}")
        if not isinstance(self.flip, bool):
            raise ConfigError(f"flip must be true or false, got {self.flip!r}")

    def describe(self) -> str:
        """``"fp32, no flip"`` / ``"bf16, flip-averaged"``."""
        return f"{self.precision}, {'flip-averaged' if self.flip else 'no flip'}"

    @classmethod
    def for_model(cls, meta: Mapping[str, Any] | None, *, flip: bool | None = None,
                  precision: str = "fp32") -> EvalProtocol:
        """The protocol a command scores a model file with: ``flip`` if given, else as the
        model was trained (its meta's ``config.test_time_flip``: so the figure matches the
        training run's); ``precision`` fp32 unless asked (a run autotuned to bf16 still
        scores fp32 here: fp32 is what every machine computes alike)."""
        if flip is None:
            flip = bool(((meta or {}).get("config") or {}).get("test_time_flip", False))
        return cls(precision=precision, flip=bool(flip))


def describe_protocol(record: Mapping[str, Any] | None) -> str | None:
    """The label of a protocol recorded as a dict (``EvalProtocol.to_dict()``), or None when
    the record has none (files written before protocols were recorded)."""
    if not record:
        return None
    return EvalProtocol.from_dict(record, source="recorded evaluation protocol").describe()


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on CPU (AMX) and CUDA; a no-op for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _logits(model: nn.Module, images: torch.Tensor, device: torch.device, precision: str,
            test_time_flip: bool) -> torch.Tensor:
    """fp32 logits; with ``test_time_flip``, summed with the mirrored images' logits."""
    with autocast_context(device, precision):
        logits = model(images)
        if test_time_flip:
            logits = logits + model(images.flip(3))
    return logits.float()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    test_time_flip: bool = False,
    *,
    protocol: EvalProtocol | None = None,
) -> dict[str, Any]:
    """Accuracy of ``model`` over ``batches`` of (normalised images, labels).

    ``protocol`` (when given) sets the precision and flip-averaging instead of ``precision`` /
    ``test_time_flip``. Returns top1/top5 as fractions (0..1), mean cross-entropy ``loss``,
    ``per_class`` accuracy, ``count`` and the ``protocol`` it was scored under (as a dict).
    Under torch.distributed, the sums are reduced over every rank.
    """
    if protocol is None:
        protocol = EvalProtocol(precision, bool(test_time_flip))
    precision, test_time_flip = protocol.precision, protocol.flip
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct1 = torch.zeros((), dtype=torch.float64, device=device)
    correct5 = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    class_correct = torch.zeros(num_classes, dtype=torch.float64, device=device)
    class_count = torch.zeros(num_classes, dtype=torch.float64, device=device)
    for images, labels in batches:
        logits = _logits(model, images, device, precision, test_time_flip)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit1 = top[:, 0] == labels
        correct1 += hit1.sum()
        correct5 += (top == labels[:, None]).any(dim=1).sum()
        class_count += torch.bincount(labels, minlength=num_classes).double()
        class_correct += torch.bincount(labels[hit1], minlength=num_classes).double()
    totals = torch.cat([torch.stack([correct1, correct5, loss_sum]), class_correct, class_count])
    totals = all_reduce_sum(totals).cpu()
    model.train(was_training)
    c1, c5, ls = totals[:3].tolist()
    cc, cn = totals[3:3 + num_classes], totals[3 + num_classes:]
    count = cn.sum().item()
    if count == 0:
        raise ValueError("evaluate() got no batches: the evaluation data is empty")
    return {
        "top1": c1 / count,
        "top5": c5 / count,
        "loss": ls / count,
        "count": int(count),
        "per_class": (cc / cn.clamp(min=1)).tolist(),
        "protocol": protocol.to_dict(),
    }


def evaluate_data(model: nn.Module, data, protocol: EvalProtocol,
                  batch_size: int = 256) -> dict[str, Any]:
    """:func:`evaluate` of ``model`` on every image of ImageTensors ``data``, on CPU, in order
    (no augmentation), under ``protocol``."""
    from squeezelab.data import BatchLoader

    loader = BatchLoader(data, batch_size, train=False, augment=None)
    loader.set_epoch(0)
    return evaluate(model, loader, data.num_classes, torch.device("cpu"), protocol=protocol)


@torch.no_grad()
def top1_correct(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    test_time_flip: bool = False,
    *,
    protocol: EvalProtocol | None = None,
) -> torch.Tensor:
    """Per image, in batch order: whether ``model``'s top-1 class is the label (bool, on CPU).

    ``protocol`` (when given) sets the precision and flip-averaging instead of ``precision`` /
    ``test_time_flip``. One process only: the images a paired comparison needs are this
    loader's, in its order.
    """
    if protocol is not None:
        precision, test_time_flip = protocol.precision, protocol.flip
    device = torch.device(device)
    was_training = model.training
    model.eval()
    hits = []
    for images, labels in batches:
        logits = _logits(model, images, device, precision, test_time_flip)
        hits.append(logits.argmax(dim=1) == labels)  # stays on the device: no sync per batch
    model.train(was_training)
    if not hits:
        raise ValueError("top1_correct() got no batches: the evaluation data is empty")
    return torch.cat(hits).cpu()


def paired_difference(correct: torch.Tensor, baseline: torch.Tensor) -> dict[str, Any]:
    """Top-1 of a model minus top-1 of a baseline, both scored on the same images, and how much
    of it could be the luck of which images were drawn.

    ``correct`` / ``baseline``: bool tensors from :func:`top1_correct`, shaped (images,) for one
    pair of models or (runs, images) for several pairs (seeds), row r of one paired with row r
    of the other. Returns ``difference`` (the mean over runs, as a fraction), ``image_se`` (the
    standard error of that mean from sampling images: the per-image differences, averaged over
    runs, have this spread / sqrt(images); it leaves out the run-to-run spread), and per run
    ``gained`` / ``lost``: the images only the model / only the baseline gets right. Only those
    move the difference, so two models that agree on most images can differ significantly by
    less than the sampling error of either accuracy alone.
    """
    if correct.shape != baseline.shape or correct.dim() not in (1, 2):
        raise ValueError(f"correct and baseline must have one shape, (images,) or (runs, "
                         f"images); got {tuple(correct.shape)} and {tuple(baseline.shape)}")
    model, base = torch.atleast_2d(correct.bool()), torch.atleast_2d(baseline.bool())
    images = model.shape[1]
    if images < 2:
        raise ValueError(f"a paired difference needs at least 2 images, got {images}")
    per_image = (model.double() - base.double()).mean(dim=0)
    return {
        "difference": per_image.mean().item(),
        "image_se": per_image.std().item() / math.sqrt(images),
        "gained": (model & ~base).sum(dim=1).tolist(),
        "lost": (base & ~model).sum(dim=1).tolist(),
        "images": images,
    }
