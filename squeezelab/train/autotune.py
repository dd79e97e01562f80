"""Pick the fastest numeric precision and memory layout for this model on this machine.

Which is fastest depends on the hardware as much as on the model: bf16 autocast pays only
where the CPU has native bf16 (AVX-512 BF16 / AMX) or on a GPU, and is many times *slower*
where it is emulated (AVX2-only CPUs); channels_last helped every SqueezeNet on one CPU we
measured and slowed the BatchNorm ones on another. So ``precision="auto"`` and
``channels_last=None`` are settled by timing a few real training steps of each candidate, on a
copy of the model, before the run starts. The choice and the timings are saved with the run.
"""
from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.train.evaluate import autocast_context


def native_bf16(device: torch.device) -> bool:
    """True where bf16 matmul/conv run in hardware (CUDA, or a CPU with AVX-512 BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def time_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               precision: str, channels_last: bool, steps: int) -> float:
    """Seconds per training step (forward, backward, an SGD update) of ``model`` on ``images``,
    after one warm-up step: on a copy, so the model, its BatchNorm statistics and its
    gradients are untouched."""
    model = copy.deepcopy(model)
    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    sync = torch.cuda.synchronize if images.is_cuda else (lambda: None)

    def step() -> None:
        with autocast_context(images.device, precision):
            loss = F.cross_entropy(model(images).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: first-call allocation and kernel selection
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) / steps


def choose_speed_settings(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    precision: str = "auto",
    channels_last: bool | None = None,
    steps: int = 2,
) -> dict[str, Any]:
    """Resolve "auto" precision and ``None`` channels_last by timing each candidate.

    Returns ``{"precision", "channels_last", "timings": {"fp32/nchw": seconds per step, ...}}``.
    Values already fixed by the caller are kept and not timed.
    """
    precisions = [precision] if precision != "auto" else (
        ["fp32", "bf16"] if native_bf16(images.device) else ["fp32"])
    layouts = [channels_last] if channels_last is not None else [False, True]
    if len(precisions) * len(layouts) == 1:
        return {"precision": precisions[0], "channels_last": layouts[0], "timings": {}}
    timings = {}
    for p in precisions:
        for cl in layouts:
            key = f"{p}/{'channels_last' if cl else 'nchw'}"
            timings[key] = time_steps(model, images, labels, p, cl, steps)
    best = min(timings, key=timings.get)
    p, layout = best.split("/")
    return {"precision": p, "channels_last": layout == "channels_last", "timings": timings}
