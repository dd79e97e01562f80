"""Evaluation: top-1/top-5 accuracy, mean loss and per-class accuracy over a loader."""
from __future__ import annotations

import contextlib
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
        with autocast_context(device, precision):
            logits = model(images)
            if test_time_flip:
                logits = logits + model(images.flip(3))
        logits = logits.float()
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
