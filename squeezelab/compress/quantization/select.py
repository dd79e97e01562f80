"""Layer selection shared by every quantizer config: globs over module names, first/last exclusion.

Each config of this subpackage derives from ``LayerSelection``: ``layers`` is a list of
shell-style globs over clean module paths (``"features.*.expand3x3"``), ``None`` meaning every
Conv2d/Linear; ``exclude`` removes matches; ``keep_first_last`` leaves the model's first and last
Conv2d/Linear untouched (BinaryConnect and XNOR-Net keep them real-valued, as those papers do).
Configs are dataclasses validated on construction on the one config base (``ConfigBase``):
``from_dict`` rejects unknown keys so a typo in a YAML recipe is an error, not a silently
ignored setting, and ``to_dict`` writes every field (tuples as lists).
"""
from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from squeezelab.config import ConfigBase
from squeezelab.models import unwrap_model

WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


def _check_globs(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(g, str) for g in value):
        raise ValueError(
            f"{name} must be a list of glob strings (e.g. ['features.*']), got {value!r}")
    return tuple(value)


@dataclass(kw_only=True)
class LayerSelection(ConfigBase):
    """Which Conv2d/Linear modules a transform touches (see the module docstring)."""

    layers: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    keep_first_last: bool = False

    def __post_init__(self) -> None:
        self.layers = _check_globs("layers", self.layers)
        self.exclude = _check_globs("exclude", self.exclude) or ()
        if not isinstance(self.keep_first_last, bool):
            raise ValueError(f"keep_first_last must be a bool, got {self.keep_first_last!r}")


def weight_layers(
    model: nn.Module, types: tuple[type[nn.Module], ...] = WEIGHT_LAYERS
) -> Iterator[tuple[str, nn.Module]]:
    """(clean name, module) of every module of ``types``, in registration order."""
    for name, module in unwrap_model(model).named_modules():
        if isinstance(module, types):
            yield name, module


def select_layers(
    model: nn.Module,
    selection: LayerSelection,
    types: tuple[type[nn.Module], ...] = WEIGHT_LAYERS,
) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs ``selection`` picks among the model's modules of ``types``.

    Raises ``ValueError`` when a glob in ``selection.layers`` matches no such module (usually a
    typo) or when nothing at all is selected.
    """
    candidates = list(weight_layers(model, types))
    kinds = "/".join(t.__name__ for t in types)
    if not candidates:
        raise ValueError(f"{type(model).__name__} has no {kinds} module to quantize")
    names = [n for n, _ in candidates]
    if selection.layers is not None:
        for glob in selection.layers:
            if not any(fnmatch.fnmatchcase(n, glob) for n in names):
                close = difflib.get_close_matches(glob, names, n=3)
                hint = f"; close names: {close}" if close else f"; names look like {names[:3]}"
                raise ValueError(f"layer glob {glob!r} matches no {kinds} module{hint}")
    edge = {names[0], names[-1]} if selection.keep_first_last else set()
    chosen = [
        (n, m)
        for n, m in candidates
        if (selection.layers is None or any(fnmatch.fnmatchcase(n, g) for g in selection.layers))
        and not any(fnmatch.fnmatchcase(n, g) for g in selection.exclude)
        and n not in edge
    ]
    if not chosen:
        raise ValueError(
            f"the layer selection (layers={selection.layers}, exclude={list(selection.exclude)}, "
            f"keep_first_last={selection.keep_first_last}) leaves no {kinds} module of {len(names)}"
        )
    return chosen


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` (a clean module path) by ``new``."""
    root = unwrap_model(model)
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if not hasattr(parent, child):
        raise ValueError(f"no submodule {name!r} in {type(root).__name__}")
    setattr(parent, child, new)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """``ValueError`` unless ``value`` is an int in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
        high is not None and value > high
    ):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer in {bound}, got {value!r}")


__all__ = [
    "LayerSelection", "WEIGHT_LAYERS", "check_int", "select_layers", "set_module",
    "weight_layers",
]
