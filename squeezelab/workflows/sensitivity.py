"""The pruning sensitivity study as a workflow (Han et al. 2015, arXiv 1506.02626, Fig. 5):
prune each layer alone at each sparsity, score top-1 on test images under one
:class:`~squeezelab.train.evaluate.EvalProtocol` with a progress bar over the (layer,
sparsity) evaluations, and write the table, the plot and the suggested per-layer sparsities.

The analysis itself is the pure ``squeezelab.compress.pruning.sensitivity``; the figure is
``squeezelab.plots.plot_sensitivity``. ``squeezelab sensitivity`` calls :func:`run_sensitivity`
and prints.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn
from tqdm.auto import tqdm

from squeezelab.compress.pruning.sensitivity import (
    DEFAULT_SPARSITIES,
    Sensitivity,
    sensitivity_analysis,
    suggest_sparsities,
)
from squeezelab.fileio import atomic_write_bytes
from squeezelab.models.layer_roles import prunable_parameters
from squeezelab.plots import plot_sensitivity
from squeezelab.train.evaluate import EvalProtocol, evaluate_data


@dataclass
class SensitivityResult:
    """What ``run_sensitivity`` returns: ``top1[layer][sparsity]`` (sparsity 0.0: the dense
    model), the ``suggested`` sparsity per layer, the ``protocol`` every top-1 was scored under,
    the number of test ``images`` and the files written (``png``, ``json``, ``suggested_json``).
    """

    top1: Sensitivity
    suggested: dict[str, float]
    max_drop: float
    protocol: EvalProtocol
    images: int
    png: Path
    json: Path
    suggested_json: Path

    def to_dict(self) -> dict[str, Any]:
        """The record written to ``sensitivity.json``: the protocol next to the figures."""
        return {"metric": "top-1", "protocol": self.protocol.to_dict(), "images": self.images,
                "max_drop": self.max_drop,
                "top1": {name: {str(s): v for s, v in row.items()}
                         for name, row in self.top1.items()},
                "suggested": self.suggested}


def run_sensitivity(
    model: nn.Module,
    test,
    output_dir: str | os.PathLike,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    max_drop: float = 0.01,
    *,
    protocol: EvalProtocol | None = None,
    progress: bool = True,
    title: str | None = None,
) -> SensitivityResult:
    """Prune each Conv2d/Linear weight of ``model`` alone at each of ``sparsities`` and score
    top-1 on ImageTensors ``test`` under ``protocol`` (default fp32, no flip); write
    ``sensitivity.png``, ``sensitivity.json`` and ``suggested.json`` (the largest sparsity per
    layer costing at most ``max_drop`` top-1) into ``output_dir``. ``model`` is not changed.

    ``progress``: a tqdm bar over the 1 + layers x sparsities evaluations (each a pass over the
    test images), so a long study shows how far it is and how long is left.
    """
    for s in sparsities:
        if not 0 <= s < 1:
            raise ValueError(f"sparsities must be in [0, 1), got {s}")
    if not max_drop >= 0:
        raise ValueError(f"max_drop must be >= 0, got {max_drop}")
    protocol = protocol or EvalProtocol()
    layers = prunable_parameters(model)
    levels = {float(s) for s in sparsities} - {0.0}
    bar = tqdm(total=1 + len(layers) * len(levels), desc="sensitivity", unit="eval",
               disable=not progress, dynamic_ncols=True)

    def top1(m: nn.Module) -> float:
        value = evaluate_data(m, test, protocol)["top1"]
        bar.update(1)
        return value

    try:
        table = sensitivity_analysis(model, top1, sparsities)
    finally:
        bar.close()
    suggested = suggest_sparsities(table, max_drop)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    roles = {name: p.types[0] for name, p in layers.items()}
    png = plot_sensitivity(table, out / "sensitivity.png",
                           f"top-1 ({protocol.describe()})", roles=roles,
                           title=title or f"Pruning sensitivity, one layer at a time "
                           f"({len(test)} test images)")
    result = SensitivityResult(top1=table, suggested=suggested, max_drop=max_drop,
                               protocol=protocol, images=len(test), png=png,
                               json=out / "sensitivity.json",
                               suggested_json=out / "suggested.json")
    atomic_write_bytes(result.json, json.dumps(result.to_dict(), indent=2).encode())
    atomic_write_bytes(result.suggested_json, json.dumps(suggested, indent=2).encode())
    return result


__all__ = ["SensitivityResult", "run_sensitivity"]
