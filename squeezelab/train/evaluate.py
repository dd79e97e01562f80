"""Evaluation: top-1/top-5 accuracy, mean loss and per-class accuracy over a loader, and the
paired comparison of two models scored on the same images."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.train.distributed import all_reduce_sum


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
) -> dict[str, Any]:
    """Accuracy of ``model`` over ``batches`` of (normalised images, labels).

    Returns top1/top5 as fractions (0..1), mean cross-entropy ``loss``, ``per_class`` accuracy
    and ``count``. Under torch.distributed, the sums are reduced over every rank.
    """
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
    }


@torch.no_grad()
def top1_correct(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    test_time_flip: bool = False,
) -> torch.Tensor:
    """Per image, in batch order: whether ``model``'s top-1 class is the label (bool, on CPU).

    One process only: the images a paired comparison needs are this loader's, in its order.
    """
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
