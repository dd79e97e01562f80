"""Evaluation: top-1/top-5 accuracy, mean loss and per-class accuracy over a loader, and the
paired comparison of two models scored on the same images.

How a figure was scored is an :class:`EvalProtocol` (precision, flip-averaging, multi-crop
testing): a command chooses one and scores every model it reports with it, and prints
``protocol.describe()`` beside every top-1, because the same checkpoint scores differently
under each (bf16 vs fp32, with or without averaging each image with its mirror: a point or
more on CIFAR-10; 10-crop or GoogLeNet's 144-crop, ``squeezelab.data.crops``).
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
from squeezelab.data.crops import CROP_COUNTS, multi_crops, translated_views
from squeezelab.train.distributed import all_reduce_sum

#: the precisions a model can be scored in
EVAL_PRECISIONS = ("fp32", "bf16")
#: the largest test-time translation, in pixels
MAX_TRANSLATE = 4


@dataclass(frozen=True)
class EvalProtocol(ConfigBase):
    """How top-1 is measured: ``precision`` of the forward ("fp32" or "bf16" autocast),
    ``flip`` (sum each image's logits with its mirror image's: test-time flip averaging) and
    multi-crop testing: ``crops`` 1, 10 (four corners and the centre, and their mirror images)
    or 144 (GoogLeNet's), of side ``crop_size`` (None: the images' own size), taken after
    padding each image by ``crop_pad`` pixels (black, as CIFAR's training crops pad); the
    logits are averaged over the crops. 10 and 144 crops include the mirror images, so
    ``flip`` is true with them; ``crops: 1`` with a ``crop_size`` is the centre crop.
    ``translate`` (pixels, 0: off; the fast CIFAR recipes' test-time augmentation) averages
    the image's logits (1/2) with those of its copies shifted by that many pixels down-right
    and up-left (1/4 each), each with its mirror image too under ``flip``; not with crops.

    Figures are only comparable under one protocol; ``describe()`` is the label printed beside
    each of them ("fp32, no flip", "fp32, 10-crop (32 px of 40)"), ``to_dict()`` what JSON
    outputs record beside them (the crop fields only when they are not the defaults, so a
    single-image protocol records what it always did).
    """

    precision: str = "fp32"
    flip: bool = False
    crops: int = 1
    crop_size: int | None = None
    crop_pad: int = 0
    translate: int = 0

    def __post_init__(self) -> None:
        if self.precision not in EVAL_PRECISIONS:
            raise ConfigError(f"evaluation precision must be one of {EVAL_PRECISIONS}, got "
                              f"{self.precision!r}")
        if not isinstance(self.flip, bool):
            raise ConfigError(f"flip must be true or false, got {self.flip!r}")
        if self.crops not in CROP_COUNTS or isinstance(self.crops, bool):
            raise ConfigError(f"crops must be one of {CROP_COUNTS}, got {self.crops!r}")
        if self.crop_size is not None and (isinstance(self.crop_size, bool) or not isinstance(
                self.crop_size, int) or self.crop_size < 1):
            raise ConfigError(f"crop_size must be a positive integer or null (the images' own "
                              f"size), got {self.crop_size!r}")
        if isinstance(self.crop_pad, bool) or not isinstance(self.crop_pad, int) \
                or self.crop_pad < 0:
            raise ConfigError(f"crop_pad must be an integer >= 0, got {self.crop_pad!r}")
        if isinstance(self.translate, bool) or not isinstance(self.translate, int) \
                or not 0 <= self.translate <= MAX_TRANSLATE:
            raise ConfigError(f"translate must be an integer number of pixels in [0, "
                              f"{MAX_TRANSLATE}], got {self.translate!r}")
        if self.translate and self.cropped:
            raise ConfigError("translate averages over shifted copies of the whole image; "
                              "it does not combine with crops, crop_size or crop_pad")
        if self.crops > 1:
            # the 10 and 144 crops are defined with their mirror images
            object.__setattr__(self, "flip", True)
        elif self.flip and (self.crop_size is not None or self.crop_pad):
            raise ConfigError("a centre crop (crops 1 with crop_size or crop_pad) is scored "
                              "without flip-averaging; take crops 10 for crops and mirrors")

    @property
    def cropped(self) -> bool:
        """Whether images are cropped (multi-crop, or one centre crop) before the forward."""
        return self.crops > 1 or self.crop_size is not None or self.crop_pad > 0

    def describe(self) -> str:
        """``"fp32, no flip"`` / ``"bf16, flip-averaged"`` / ``"fp32, 10-crop (32 px of
        40)"`` / ``"fp32, 144-crop (224 px)"`` / ``"fp32, centre crop (224 px)"``."""
        if not self.cropped:
            shifts = f", translated +-{self.translate} px" if self.translate else ""
            return f"{self.precision}, {'flip-averaged' if self.flip else 'no flip'}{shifts}"
        kind = "centre crop" if self.crops == 1 else f"{self.crops}-crop"
        size = "the image size" if self.crop_size is None else f"{self.crop_size} px"
        pad = f", images padded by {self.crop_pad} px" if self.crop_pad else ""
        return f"{self.precision}, {kind} ({size}{pad})"

    def to_dict(self) -> dict[str, Any]:
        """Every field, less the crop fields and ``translate`` where the protocol scores
        single images (so it records what protocols recorded before these existed)."""
        out = super().to_dict()
        if not self.cropped:
            for name in ("crops", "crop_size", "crop_pad", *(() if self.translate
                                                               else ("translate",))):
                out.pop(name)
        return out

    @classmethod
    def for_model(cls, meta: Mapping[str, Any] | None, *, flip: bool | None = None,
                  precision: str = "fp32", translate: int | None = None) -> EvalProtocol:
        """The protocol a command scores a model file with: ``flip`` and ``translate`` if
        given, else as the model was trained (its meta's ``config.test_time_flip`` and
        ``config.test_time_translate``: so the figure matches the training run's);
        ``precision`` fp32 unless asked (a run autotuned to bf16 still scores fp32 here: fp32
        is what every machine computes alike)."""
        config = (meta or {}).get("config") or {}
        if flip is None:
            flip = bool(config.get("test_time_flip", False))
        if translate is None:
            translate = int(config.get("test_time_translate", 0) or 0)
        return cls(precision=precision, flip=bool(flip), translate=translate)


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


def _logits(model: nn.Module, images: torch.Tensor, device: torch.device,
            protocol: EvalProtocol, pad_value: Any = 0.0) -> torch.Tensor:
    """fp32 logits under ``protocol``: with ``flip``, summed with the mirrored images' logits;
    with crops, averaged over the crops (one forward per crop: never all crops in memory)."""
    with autocast_context(device, protocol.precision):
        if protocol.cropped:
            total = None
            count = 0
            for crop in multi_crops(images, protocol.crops, protocol.crop_size,
                                    protocol.crop_pad, pad_value):
                out = model(crop.contiguous(memory_format=_layout(images))).float()
                total = out if total is None else total + out
                count += 1
            return total / count
        if protocol.translate:
            total = None
            for weight, view in translated_views(images, protocol.translate, pad_value):
                out = model(view.contiguous(memory_format=_layout(images))).float()
                if protocol.flip:
                    out = out + model(view.flip(3).contiguous(
                        memory_format=_layout(images))).float()
                total = weight * out if total is None else total + weight * out
            return total
        logits = model(images)
        if protocol.flip:
            logits = logits + model(images.flip(3))
    return logits.float()


def _layout(images: torch.Tensor) -> torch.memory_format:
    """channels_last for a channels-last batch (a crop of one is not contiguous)."""
    return (torch.channels_last if images.dim() == 4 and not images.is_contiguous()
            and images.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format)


def black_pixel(mean, std) -> torch.Tensor:
    """A black pixel (0 in every channel) once normalised: -mean / std per channel, the value a
    crop's padding takes, as CIFAR's training crops pad with black."""
    return -torch.as_tensor(mean, dtype=torch.float32) / torch.as_tensor(std,
                                                                         dtype=torch.float32)


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
    pad_value: Any = 0.0,
) -> dict[str, Any]:
    """Accuracy of ``model`` over ``batches`` of (normalised images, labels).

    ``protocol`` (when given) sets the precision, flip-averaging and crops instead of
    ``precision`` / ``test_time_flip``; ``pad_value``: what a ``crop_pad`` pads with, per
    channel in normalised units (``black_pixel(mean, std)``; 0, the mean colour, by default).
    Returns top1/top5 as fractions (0..1), mean cross-entropy ``loss``, ``per_class`` accuracy,
    ``count`` and the ``protocol`` it was scored under (as a dict).
    Under torch.distributed, the sums are reduced over every rank.
    """
    if protocol is None:
        protocol = EvalProtocol(precision, bool(test_time_flip))
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct1 = torch.zeros((), dtype=torch.float64, device=device)
    correct5 = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    class_correct = torch.zeros(num_classes, dtype=torch.float64, device=device)
    class_count = torch.zeros(num_classes, dtype=torch.float64, device=device)
    for images, labels in batches:
        logits = _logits(model, images, device, protocol, pad_value)
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
    (no augmentation), under ``protocol`` (a crop padding is black: ``black_pixel``)."""
    from squeezelab.data import BatchLoader

    loader = BatchLoader(data, batch_size, train=False, augment=None)
    loader.set_epoch(0)
    return evaluate(model, loader, data.num_classes, torch.device("cpu"), protocol=protocol,
                    pad_value=black_pixel(data.mean, data.std))


@torch.no_grad()
def data_logits(model: nn.Module, data, protocol: EvalProtocol,
                batch_size: int = 256) -> torch.Tensor:
    """The fp32 logits ``model`` (in eval mode) gives every image of ImageTensors ``data``, in
    order, on CPU, under ``protocol``: what two copies of one model must agree on exactly."""
    from squeezelab.data import BatchLoader

    loader = BatchLoader(data, batch_size, train=False, augment=None)
    loader.set_epoch(0)
    was_training = model.training
    model.eval()
    pad = black_pixel(data.mean, data.std)
    out = [_logits(model, images, torch.device("cpu"), protocol, pad) for images, _ in loader]
    model.train(was_training)
    if not out:
        raise ValueError("data_logits() got no images: the evaluation data is empty")
    return torch.cat(out)


@torch.no_grad()
def top1_correct(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    test_time_flip: bool = False,
    *,
    protocol: EvalProtocol | None = None,
    pad_value: Any = 0.0,
) -> torch.Tensor:
    """Per image, in batch order: whether ``model``'s top-1 class is the label (bool, on CPU).

    ``protocol`` (when given) sets the precision, flip-averaging and crops instead of
    ``precision`` / ``test_time_flip`` (``pad_value``: as for :func:`evaluate`). One process
    only: the images a paired comparison needs are this loader's, in its order.
    """
    if protocol is None:
        protocol = EvalProtocol(precision, bool(test_time_flip))
    device = torch.device(device)
    was_training = model.training
    model.eval()
    hits = []
    for images, labels in batches:
        logits = _logits(model, images, device, protocol, pad_value)
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
