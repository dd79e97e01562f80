"""Pruning sensitivity analysis: prune one layer at a time and measure the metric (Han et al.
2015, arXiv 1506.02626, Fig. 5), then pick per-layer sparsities that cost at most a given drop.

The metric comes from a caller's ``evaluate(model) -> float`` where higher is better (e.g. top-1
accuracy as a fraction). Every evaluation runs on one private copy of the model, in eval mode and
under ``torch.no_grad()``; the caller's model is never changed. Pure: the plot of a result is
``squeezelab.plots.plot_sensitivity``, the driver (data, protocol, progress, files)
``squeezelab.workflows.sensitivity``.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from squeezelab.compress.pruning.magnitude import (
    _check_sparsity,
    magnitude_mask,
    prunable_parameters,
)
from squeezelab.models import unwrap_model

DEFAULT_SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

#: result[layer][sparsity] -> metric; sparsity 0.0 is the dense baseline, present for every layer
Sensitivity = dict[str, dict[float, float]]


def sensitivity_analysis(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    layers: Iterable[str] | None = None,
) -> Sensitivity:
    """For each layer (a prunable weight name; default: every Conv2d/Linear weight) and each
    sparsity, magnitude-prune that layer alone and record ``evaluate``. The dense metric is
    evaluated once and stored under sparsity 0.0 of every layer."""
    levels = sorted({_check_sparsity(float(s)) for s in sparsities} - {0.0})
    work = copy.deepcopy(unwrap_model(model)).eval()
    params = dict(work.named_parameters())
    prunable = prunable_parameters(work)
    names = list(prunable) if layers is None else list(layers)
    unknown = [n for n in names if n not in prunable]
    if unknown:
        raise ValueError(f"layers {unknown[:3]} are not prunable weights of "
                         f"{type(work).__name__}; expected names like {list(prunable)[:3]}")

    def measure() -> float:
        work.eval()  # an evaluate that switches to train mode must not leak into the next run
        with torch.no_grad():
            value = evaluate(work)
        return float(value)

    baseline = measure()
    result: Sensitivity = {}
    for name in names:
        weight = params[name]
        original = weight.detach().clone()
        row = {0.0: baseline}
        for s in levels:
            with torch.no_grad():
                weight.copy_(original)
                weight.masked_fill_(~magnitude_mask(original, s), 0)
            row[s] = measure()
        with torch.no_grad():
            weight.copy_(original)
        result[name] = row
    return result


def sensitivity_table(result: Mapping[str, Mapping[float, float]], digits: int = 4) -> str:
    """A plain-text table: one row per layer, one column per sparsity."""
    if not result:
        return "(no layers)"
    levels = sorted({s for row in result.values() for s in row})
    cells = {
        name: [f"{row[s]:.{digits}f}" if s in row else "-" for s in levels]
        for name, row in result.items()
    }
    width = max(len("layer"), *(len(n) for n in result))
    col = max(len(c) for row in cells.values() for c in row + [f"{levels[-1]:.2f}"])
    head = "layer".ljust(width) + "".join(f"  {s:>{col}.2f}" for s in levels)
    lines = [head, "-" * len(head)]
    for name, row in cells.items():
        lines.append(name.ljust(width) + "".join(f"  {c:>{col}}" for c in row))
    return "\n".join(lines)


def suggest_sparsities(
    result: Mapping[str, Mapping[float, float]], max_drop: float
) -> dict[str, float]:
    """Per layer, the largest tested sparsity such that it and every smaller tested sparsity
    keep the metric >= baseline - max_drop (baseline = the layer's entry at 0.0). Stopping at
    the first failure keeps a noisy curve from suggesting a level past a real drop."""
    if not max_drop >= 0:
        raise ValueError(f"max_drop must be >= 0, got {max_drop}")
    out = {}
    for name, row in result.items():
        if 0.0 not in row:
            raise ValueError(f"layer {name!r} has no dense baseline (sparsity 0.0) in the result")
        floor = row[0.0] - max_drop
        best = 0.0
        for s in sorted(row):
            if row[s] < floor:
                break
            best = s
        out[name] = best
    return out


__all__ = [
    "DEFAULT_SPARSITIES", "sensitivity_analysis", "sensitivity_table",
    "suggest_sparsities",
]
