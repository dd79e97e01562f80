"""The kinds of study cell: what one cell of a study runs.

A kind is ONE registration: a module in ``squeezelab/workflows/studies/kinds/`` (every module
there is imported on the first look-up) with a function decorated by ``register_cell_kind``::

    @register_cell_kind("train", settings=TrainConfig, prepare=place_train_run,
                        missing_data=train_data_missing, failures=(TrainingDiverged,))
    def run_train_cell(cfg: TrainConfig, ctx: CellContext) -> dict:
        ...
        return {"metrics": {"test_top1": ..., "test_top5": ...}, "parameters": ..., ...}

* ``settings``: the ConfigBase the cell's merged recipe values become (unknown keys rejected);
* ``prepare(values, seed, run_dir, where)``: puts the seed and the cell's output folder into
  the plain values before they are validated (the study, not the recipe, places outputs);
* the decorated function runs the cell and returns its result record: ``metrics`` (with
  ``test_top1`` / ``test_top5`` where it measures them, as fractions) and what else it measured
  (results.py lists the fields a record may hold). It resumes an interrupted cell from what it
  finds in ``ctx.run_dir``, and raises ``CellInterrupted`` when a Ctrl-C stopped it;
* ``missing_data(settings)``: a reason when the cell's data is not on this machine (the cell
  is then reported as skipped, not failed), else None;
* ``failures``: exceptions that end a cell as "failed" (recorded, and the study goes on);
  anything else stops the study.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from squeezelab.config import ConfigBase

KINDS_PACKAGE = "squeezelab.workflows.studies.kinds"


class CellInterrupted(Exception):
    """A Ctrl-C stopped a cell after it saved what it had; the next run resumes it."""


@dataclass
class CellContext:
    """What a running cell gets besides its settings: its name, the folder its outputs go to
    (the folder ``prepare`` put into the settings), a cache it may keep decoded data in across
    cells of one process, whether to show progress, and the speed settings to use where the
    cell leaves them to the autotune (``pin_speed``)."""

    name: str
    run_dir: Path
    cache: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    #: {precision, channels_last} the study's first cell on this machine chose, for the
    #: settings a cell leaves to the autotune (runner.py: speed pinning); None: autotune
    speed: dict[str, Any] | None = None


def _keep_values(values: dict[str, Any], seed: int, run_dir: Path, where: str) -> dict[str, Any]:
    return values


def _no_missing_data(settings: Any) -> str | None:
    return None


@dataclass(frozen=True)
class CellKind:
    """A registered kind (see the module docstring)."""

    name: str
    settings: type[ConfigBase]
    run: Callable[[Any, CellContext], dict[str, Any]]
    prepare: Callable[[dict[str, Any], int, Path, str], dict[str, Any]] = _keep_values
    missing_data: Callable[[Any], str | None] = _no_missing_data
    failures: tuple[type[BaseException], ...] = ()


_KINDS: dict[str, CellKind] = {}
_loaded = False


def register_cell_kind(name: str, *, settings: type[ConfigBase],
                       prepare: Callable[[dict[str, Any], int, Path, str], dict[str, Any]]
                       | None = None,
                       missing_data: Callable[[Any], str | None] | None = None,
                       failures: tuple[type[BaseException], ...] = ()):
    """Decorator: register the decorated ``run(settings, ctx) -> record`` as kind ``name``."""
    def decorator(run: Callable[[Any, CellContext], dict[str, Any]]):
        if name in _KINDS:
            raise ValueError(f"cell kind {name!r} is registered twice")
        _KINDS[name] = CellKind(name, settings, run, prepare or _keep_values,
                                missing_data or _no_missing_data, tuple(failures))
        return run
    return decorator


def _load_kinds() -> None:
    """Import every module of the kinds package once: their decorators register the kinds."""
    global _loaded
    if _loaded:
        return
    package = importlib.import_module(KINDS_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{KINDS_PACKAGE}.{module.name}")
    _loaded = True


def list_cell_kinds() -> list[str]:
    """The registered kinds' names, sorted."""
    _load_kinds()
    return sorted(_KINDS)


def get_cell_kind(name: str) -> CellKind:
    """The kind registered as ``name``; a ValueError lists the kinds there are."""
    _load_kinds()
    if name not in _KINDS:
        raise ValueError(f"unknown cell kind {name!r}; expected one of "
                         f"{', '.join(sorted(_KINDS))}")
    return _KINDS[name]



def pin_speed(cfg: Any, ctx: CellContext) -> Any:
    """``cfg`` (a TrainConfig) with the study's pinned precision and memory layout where it
    leaves them to the autotune ("auto", None): every cell of a study then trains under the
    same numerics, whatever the machine's load when its autotune would have timed it (one
    cell of the DSD sweeps chose fp32 beside three busy processes where the others chose
    bf16)."""
    if not ctx.speed:
        return cfg
    changes = {}
    if cfg.precision == "auto" and ctx.speed.get("precision"):
        changes["precision"] = ctx.speed["precision"]
    if cfg.channels_last is None and ctx.speed.get("channels_last") is not None:
        changes["channels_last"] = bool(ctx.speed["channels_last"])
    return cfg.replace(**changes) if changes else cfg


__all__ = ["CellContext", "CellInterrupted", "CellKind", "get_cell_kind", "list_cell_kinds",
           "pin_speed", "register_cell_kind"]
