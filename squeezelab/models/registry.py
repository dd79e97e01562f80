"""Model registry: ``register_model``, ``create_model``, ``list_models``, and ``skeleton`` for
building a model whose tensors a file is about to fill.

Every builder takes the same constructor arguments (``num_classes``, ``in_chans``, ``dropout``)
plus its own overrides, so tests can parametrize over ``list_models()`` and a checkpoint can
rebuild any model from its registry name and arguments alone (see ``model_spec``).

A model may also register ``train_defaults``: the training settings (optimizer, lr, warm-up,
...) measured to train it well. A run that does not set a field itself takes the model's value
(``TrainConfig`` resolves them), so training a model without a recipe uses what is known to
work for it rather than one setting for every model.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode


class UnknownModelError(ValueError):
    """Raised for a model name that is not in the registry."""


class ModelArgumentError(ValueError, TypeError):
    """Raised for a constructor argument the model cannot be built with, such as a value of the
    wrong type (``--model-arg widths=3`` where a list is expected). A TypeError, as a bad
    argument is in Python; a ValueError too, so that the command line reports it as bad input in
    one line instead of a traceback."""


class UnknownModelArgumentError(ModelArgumentError):
    """Raised for a constructor argument the model does not take (``--model-arg widht=...``)."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    # Input size (pixels, square) the model is designed for; used by `info` and tests.
    default_input_size: int
    # Free-form tags such as "cifar", "imagenet", "baseline", "teacher".
    tags: tuple[str, ...] = ()
    description: str = ""
    default_num_classes: int = 1000
    # TrainConfig values measured to train this model well, used for the fields a run leaves
    # unset (read-only: one mapping may be shared by a family of models)
    train_defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str | None = None,
    *,
    input_size: int = 224,
    num_classes: int = 1000,
    tags: tuple[str, ...] = (),
    train_defaults: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder under ``name`` (default: the function's name).

    ``train_defaults``: TrainConfig values (``{"optimizer": "adamw", "lr": 0.005, ...}``) that
    a training run of this model uses for the fields it does not set; say in a comment where
    they were measured."""

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered twice")
        doc = inspect.getdoc(fn) or ""
        _REGISTRY[key] = ModelEntry(
            name=key,
            builder=fn,
            default_input_size=input_size,
            tags=tuple(tags),
            description=doc.splitlines()[0] if doc else "",
            default_num_classes=num_classes,
            train_defaults=MappingProxyType(dict(train_defaults or {})),
        )
        return fn

    return decorate


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern`` ("squeezenet*")."""
    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; an unknown name lists the close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}{hint} (`squeezelab models` lists all {len(_REGISTRY)})"
        ) from None


def create_model(name: str, num_classes: int | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model.

    ``num_classes`` defaults to the entry's own (1000 for ImageNet layouts, 10 for CIFAR ones).
    The returned module carries ``model.spec`` = ``{"name": ..., "kwargs": {...}}``, enough to
    rebuild it with ``create_model(spec["name"], **spec["kwargs"])``.
    """
    entry = get_entry(name)
    if num_classes is None:
        num_classes = entry.default_num_classes
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    params = inspect.signature(entry.builder).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in overrides if k not in params and not accepts_any]
    if unknown:
        allowed = sorted(k for k in params if k != "num_classes")
        raise UnknownModelArgumentError(
            f"model {name!r} got unknown argument(s) {unknown}; it accepts {allowed}")
    try:
        model = entry.builder(num_classes=num_classes, **overrides)
    except TypeError as err:
        # With the names checked above, a TypeError from a builder given overrides is a value of
        # the wrong type (a number where a list is expected). The defaults never raise one, so
        # without overrides it is a bug in the builder and keeps its traceback.
        if not overrides:
            raise
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise ModelArgumentError(
            f"model {name!r} cannot be built with {given}: {err}") from err
    model.spec = {"name": name, "kwargs": {"num_classes": num_classes, **overrides}}
    return model


#: The ``torch.nn.init`` functions (kaiming_uniform_, normal_, zeros_, ...) a builder may call.
_INIT_FUNCTIONS = frozenset(getattr(nn.init, n) for n in dir(nn.init)
                            if n.endswith("_") and not n.startswith("_"))


class _SkipInit(TorchFunctionMode):
    """Makes the ``torch.nn.init`` calls that dispatch overrides (the random ones: kaiming,
    xavier, normal, uniform, ...) return their tensor untouched; ``zeros_``/``ones_`` do not
    dispatch and still run, which on the meta device costs nothing."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _INIT_FUNCTIONS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


@contextmanager
def skeleton() -> Iterator[None]:
    """Build models on the meta device (no memory) without running their initialisation.

    For a model whose every tensor is about to be overwritten (a file being loaded): the
    initialisers' Python overhead is half of building SqueezeNet v1.0 even on the meta device
    (measured: 24 ms with them, 5-14 ms without, on a busy 2-core machine). Materialise the
    result with ``model.to_empty(device=...)`` and fill it; a buffer that is not in the state
    dict (non-persistent) is left uninitialised, so build such models normally.
    """
    with torch.device("meta"), _SkipInit():
        yield


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The ``{"name", "kwargs"}`` a registry model was built with (unwrapping DDP/compile)."""
    model = unwrap_model(model)
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError(
            f"{type(model).__name__} was not built by squeezelab.create_model, so it has no spec"
        )
    return {"name": spec["name"], "kwargs": dict(spec["kwargs"])}


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel / torch.compile wrappers so names are clean module paths."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # torch.compile
        elif isinstance(getattr(model, "module", None), nn.Module) and type(model).__name__ in (
            "DistributedDataParallel",
            "DataParallel",
        ):
            model = model.module
        else:
            return model
