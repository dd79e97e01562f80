"""The ``sensitivity`` cell: per-layer pruning sensitivity of the model ``source`` names (Han
et al. 2015, arXiv 1506.02626, Fig. 5; ``workflows/sensitivity.py``'s ``run_sensitivity``):
each conv/linear weight pruned alone, by magnitude, at each of ``sparsities``, and the model
scored on the source's test images.

Recipe values: ``source`` (a checkpoint or ``{cell: ...}``), ``sparsities``, ``max_drop`` (the
top-1 a suggested per-layer sparsity may cost), ``limit_test`` (score on a balanced subset of
the test split; null: the images the source was scored on), ``test_time_flip``.

The record: the source's top-1, one row per layer and sparsity (``rows``: layer, role, sparsity,
top-1 and its drop from the source's), the suggested sparsity per layer, summaries in
``metrics`` (the mean top-1 over the layers at each sparsity, the most sensitive layer at the
highest sparsity), and the paths of the plot and the JSON ``run_sensitivity`` wrote.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from squeezelab.compress.pruning.sensitivity import DEFAULT_SPARSITIES
from squeezelab.config import ConfigBase, ConfigError
from squeezelab.models.layer_roles import prunable_parameters
from squeezelab.workflows.sensitivity import run_sensitivity
from squeezelab.workflows.studies.model_cells import (
    check_source,
    continue_section,
    data_for,
    load_source,
    place_seed,
    protocol_for,
    source_checkpoint,
    train_config,
)
from squeezelab.workflows.studies.registry import CellContext, register_cell_kind


@dataclass
class SensitivityCellSettings(ConfigBase):
    """A ``sensitivity`` cell (see the module docstring); ``seed`` is placed by the study."""

    source: str
    sparsities: list[float] = field(default_factory=lambda: list(DEFAULT_SPARSITIES))
    max_drop: float = 0.01
    limit_test: int | None = None
    test_time_flip: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_source(self.source)
        if isinstance(self.sparsities, (int, float)):
            self.sparsities = [self.sparsities]
        if not isinstance(self.sparsities, (list, tuple)) or not self.sparsities or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) and 0 < s < 1
                for s in self.sparsities):
            raise ConfigError(f"sparsities must be a non-empty list of fractions in (0, 1), "
                              f"got {self.sparsities!r}")
        self.sparsities = [float(s) for s in self.sparsities]
        if isinstance(self.max_drop, bool) or not isinstance(self.max_drop, (int, float)) \
                or not self.max_drop >= 0:
            raise ConfigError(f"max_drop must be a fraction >= 0, got {self.max_drop!r}")
        if self.limit_test is not None and (isinstance(self.limit_test, bool) or not isinstance(
                self.limit_test, int) or self.limit_test < 1):
            raise ConfigError(f"limit_test must be a positive integer or null, got "
                              f"{self.limit_test!r}")


@register_cell_kind("sensitivity", settings=SensitivityCellSettings, prepare=place_seed)
def run_sensitivity_cell(settings: SensitivityCellSettings,
                         ctx: CellContext) -> dict[str, Any]:
    """Prune each layer of the source alone at each sparsity, score it, and return the
    cell's record (plot and JSON in the run folder)."""
    checkpoint = source_checkpoint(settings.source)
    src = load_source(settings.source)
    overrides = {} if settings.limit_test is None else {"limit_test": settings.limit_test}
    cfg = train_config(continue_section(src.meta, overrides, settings.seed), ctx,
                       f"cell {ctx.name}")
    data = data_for(cfg, ctx)
    protocol = protocol_for(src.meta, settings.test_time_flip)
    model_name = (src.meta.get("model") or {}).get("name", "the model")
    result = run_sensitivity(src.model, data.test, ctx.run_dir, settings.sparsities,
                             settings.max_drop, protocol=protocol, progress=ctx.progress,
                             title=f"Pruning sensitivity of {model_name}, one layer at a time "
                             f"({len(data.test)} test images)")
    roles = {name: p.types[0] for name, p in prunable_parameters(src.model).items()}
    dense = next(iter(result.top1.values()))[0.0]
    rows = [{"layer": layer, "role": roles.get(layer), "sparsity": s, "top1": top1,
             "drop": dense - top1}
            for layer, row in result.top1.items() for s, top1 in sorted(row.items()) if s > 0]
    levels = sorted({r["sparsity"] for r in rows})
    highest = [r for r in rows if r["sparsity"] == levels[-1]]
    worst = min(highest, key=lambda r: r["top1"])
    return {
        "metrics": {
            "test_top1": dense,  # the source, unpruned: every row's baseline
            "layers": len(result.top1),
            # mean over the layers of the top-1 with that one layer pruned, per sparsity in
            # percent ("s50": 50% pruned; no dot, so report field paths can name it)
            "mean_top1": {f"s{round(100 * s)}": statistics.mean(
                r["top1"] for r in rows if r["sparsity"] == s) for s in levels},
            "most_sensitive_layer": worst["layer"],
            "most_sensitive_top1": worst["top1"],
            "mean_suggested_sparsity": statistics.mean(result.suggested.values()),
            "test_protocol": protocol.to_dict(),
        },
        "rows": rows,
        "suggested": result.suggested,
        "max_drop": settings.max_drop,
        "png": str(result.png),
        "json": str(result.json),
        "source": {"path": str(checkpoint), "top1": dense, "protocol": protocol.to_dict()},
        "test_images": result.images,
        "run_dir": str(ctx.run_dir),
    }


__all__ = ["SensitivityCellSettings", "run_sensitivity_cell"]
