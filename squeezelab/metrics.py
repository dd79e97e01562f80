"""Model accounting: parameters, MACs (from ``torch.utils.flop_counter``), bytes, per-layer
tables, and forward-pass timing.

MACs are multiply-accumulates: the flop counter's FLOPs / 2 (it counts a conv's
multiply-accumulate as 2 FLOPs).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from squeezelab.models import unwrap_model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def fp32_bytes(model: nn.Module) -> int:
    """Bytes of the parameters stored as float32 (4 bytes each): the uncompressed baseline."""
    return 4 * count_parameters(model)


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int

    @property
    def fp32_bytes(self) -> int:
        return 4 * self.params


def _dummy_input(model: nn.Module, input_size: int | tuple[int, int],
                 in_chans: int | None) -> torch.Tensor:
    """One zero image: ``input_size`` is a side (square) or (height, width)."""
    if in_chans is None:
        first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
        in_chans = first.in_channels if isinstance(first, nn.Conv2d) else 3
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    return torch.zeros(1, in_chans, height, width, device=device)


@torch.no_grad()
def layer_table(model: nn.Module, input_size: int = 224, in_chans: int | None = None
                ) -> list[LayerRow]:
    """One row per leaf module that has parameters or does work: output shape, params, MACs."""
    model = unwrap_model(model)
    was_training = model.training
    model.eval()
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        if len(list(module.children())) == 0:
            def record(mod, inp, out, name=name):
                if torch.is_tensor(out):
                    shapes[name] = tuple(out.shape[1:])
            handles.append(module.register_forward_hook(record))
    x = _dummy_input(model, input_size, in_chans)
    try:
        with FlopCounterMode(display=False, depth=None) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    flops = counter.get_flop_counts()
    prefix = type(model).__name__ + "."
    rows = []
    for name, module in model.named_modules():
        if name not in shapes:
            continue
        params = sum(p.numel() for p in module.parameters(recurse=False))
        macs = sum(flops.get(prefix + name, {}).values()) // 2
        rows.append(LayerRow(name, type(module).__name__, shapes[name], params, macs))
    return rows


def count_macs(model: nn.Module, input_size: int | tuple[int, int] = 224,
               in_chans: int | None = None) -> int:
    """Multiply-accumulates of one forward pass of a single image (side or (height, width))."""
    model = unwrap_model(model)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(_dummy_input(model, input_size, in_chans))
    model.train(was_training)
    return counter.get_total_flops() // 2


def human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{suffix}{unit}" if suffix else f"{n:g}{unit}"
        n /= 1000
    return f"{n:.3g}P{unit}"


def format_layer_table(rows: list[LayerRow], skip_empty: bool = True) -> str:
    """A text table of ``layer_table`` rows with a total line."""
    shown = [r for r in rows if not skip_empty or r.params or r.macs]
    headers = ("layer", "type", "output", "params", "MACs", "fp32 bytes")
    lines = [(r.name, r.kind, "x".join(map(str, r.output_shape)), f"{r.params:,}",
              f"{r.macs:,}", f"{r.fp32_bytes:,}") for r in shown]
    total = ("total", "", "", f"{sum(r.params for r in rows):,}",
             f"{sum(r.macs for r in rows):,}", f"{sum(r.fp32_bytes for r in rows):,}")
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *lines, total)]

    def fmt(row):
        return "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths)))

    sep = "-" * len(fmt(headers))
    return "\n".join([fmt(headers), sep, *map(fmt, lines), sep, fmt(total)])


def model_summary(model: nn.Module, input_size: int = 224) -> dict[str, Any]:
    """Headline figures: parameters, MACs, fp32 MB."""
    params = count_parameters(model)
    return {
        "parameters": params,
        "macs": count_macs(model, input_size),
        "fp32_bytes": 4 * params,
        "input_size": input_size,
    }


@torch.no_grad()
def time_forward(model: nn.Module, batch: torch.Tensor, warmup: int = 3, iters: int = 10
                 ) -> dict[str, float]:
    """Seconds per forward pass of ``batch`` (after ``warmup`` untimed passes, in which
    oneDNN picks and caches its kernels): mean, median, stdev, min. Runs under whatever
    autocast context the caller opened."""
    model.eval()
    sync = torch.cuda.synchronize if batch.is_cuda else (lambda: None)
    for _ in range(warmup):
        model(batch)
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        model(batch)
        sync()
        times.append(time.perf_counter() - t0)
    return {"mean_s": statistics.mean(times), "median_s": statistics.median(times),
            "stdev_s": statistics.pstdev(times),
            "min_s": min(times), "images_per_s": batch.shape[0] / statistics.mean(times)}
