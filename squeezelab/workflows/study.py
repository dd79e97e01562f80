"""Study grids as data: a YAML file of a base config and named axes, expanded into the
cartesian product of TrainConfigs (the seed studies' optimizer and activation grids).

Grid file layout::

    base:            # TrainConfig values shared by every cell
      lr: 0.001
    axes:            # in order; each axis a list of named variants of TrainConfig values
      optimizer:
        - {name: adam, optimizer: adam}
        - {name: sgdr, optimizer: sgd, schedule: cosine_restarts, skip_axes: [scheduler]}
      scheduler:
        - {name: none, schedule: constant}
        - {name: cosine, schedule: cosine}

A variant's ``skip_axes`` leaves those axes out of its cells (SGDR *is* a schedule, so the
scheduler axis does not apply to it). ``model_args`` of variants merge key by key; any other
key set by two axes of one cell is an error (the grid would be ambiguous).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeezelab.config import read_yaml_mapping
from squeezelab.train.config import ConfigError, TrainConfig


@dataclass
class StudyCell:
    """One run of a grid: its name (variant names joined by ``-``), the variant per axis
    (None for skipped axes) and the full config."""

    name: str
    variants: dict[str, str | None]
    config: TrainConfig


def load_grid(path: str | Path) -> dict[str, Any]:
    grid = read_yaml_mapping(path, "grid file")
    if not isinstance(grid.get("axes"), dict) or not grid["axes"]:
        raise ConfigError(f"grid {path} must be a mapping with a non-empty 'axes:' mapping")
    unknown = sorted(set(grid) - {"base", "axes"})
    if unknown:
        raise ConfigError(f"grid {path}: unknown top-level key(s) {unknown}; expected base, axes")
    return grid


def expand_grid(grid: dict[str, Any] | str | Path,
                overrides: dict[str, Any] | None = None) -> list[StudyCell]:
    """Every cell of ``grid`` (a mapping or a grid file) as a validated TrainConfig, in axis
    order; ``overrides`` (e.g. epochs, limit_train from the command line) win over all."""
    source = str(grid) if not isinstance(grid, dict) else "grid"
    if not isinstance(grid, dict):
        grid = load_grid(grid)
    base = dict(grid.get("base") or {})
    axes: dict[str, list[dict[str, Any]]] = grid["axes"]
    for axis, variants in axes.items():
        if not isinstance(variants, list) or not variants:
            raise ConfigError(f"{source}: axis {axis!r} must be a non-empty list of variants")
        for v in variants:
            if not isinstance(v, dict) or "name" not in v:
                raise ConfigError(f"{source}: every variant of axis {axis!r} needs a name, got "
                                  f"{v!r}")
            for skipped in v.get("skip_axes", []):
                if skipped not in axes:
                    raise ConfigError(f"{source}: variant {v['name']!r} skips axis "
                                      f"{skipped!r}, which the grid does not have")
    names = list(axes)
    cells: list[StudyCell] = []
    seen: set[str] = set()
    for combo in itertools.product(*(axes[a] for a in names)):
        skipped = {s for v in combo for s in v.get("skip_axes", [])}
        chosen = {a: (None if a in skipped else v) for a, v in zip(names, combo)}
        name = "-".join(v["name"] for v in chosen.values() if v is not None)
        if name in seen:  # the same cell reached through a skipped axis' other variants
            continue
        seen.add(name)
        values = dict(base)
        set_by: dict[str, str] = {}
        for axis, variant in chosen.items():
            if variant is None:
                continue
            for key, value in variant.items():
                if key in ("name", "skip_axes"):
                    continue
                if key == "model_args":
                    values["model_args"] = {**values.get("model_args", {}), **value}
                    continue
                if key in set_by:
                    raise ConfigError(f"{source}: cell {name!r} sets {key!r} on both axis "
                                      f"{set_by[key]!r} and axis {axis!r}")
                set_by[key] = axis
                values[key] = value
        values.update(overrides or {})
        # one run directory per cell (a base run_name becomes the prefix)
        values["run_name"] = f"{base['run_name']}-{name}" if base.get("run_name") else name
        config = TrainConfig.from_dict(values, source=f"{source} cell {name!r}")
        cells.append(StudyCell(name, {a: (v["name"] if v else None)
                                      for a, v in chosen.items()}, config))
    return cells


__all__ = ["StudyCell", "expand_grid", "load_grid"]
