"""``create_skeleton``: a registry model on the meta device, for a file about to fill it, built
once per spec and copied after that.

Building SqueezeNet v1.0 under ``registry.skeleton()`` is ~92 module constructors of Python
(4.6-5.9 ms on a 2-core AMD EPYC, a quarter of loading a squeezenet1_0-sized .sqz); copying the
module tree of one already built takes 1.3-1.9 ms. A copy shares nothing mutable with the kept
one except its meta tensors, which the load replaces (``load_state_dict(assign=True)`` puts new
tensors in the copy's own ``_parameters`` and ``_buffers``). Only a model whose modules hold
plain data besides their children and tensors is copied; one with hooks, parametrizations,
non-persistent buffers or attributes of any other kind (a module or a tensor kept outside
``_modules``/``_parameters``/``_buffers``, an object of its own class) is built every time, as
its copy could not be checked to be faithful.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn

from squeezelab.models.registry import create_model, get_entry, skeleton

_KEPT = 8  # specs whose skeleton is kept (a meta-device model is a few hundred kB of Python)
_SKELETONS: OrderedDict[tuple[Any, ...], nn.Module] = OrderedDict()
_LOCK = threading.Lock()

_ATOMS = (int, float, bool, str, bytes, type(None), torch.Size, torch.dtype, torch.device)
_TREE = ("_modules", "_parameters", "_buffers")  # what the copy rebuilds itself


def create_skeleton(name: str, **kwargs: Any) -> nn.Module:
    """``create_model(name, **kwargs)`` under ``skeleton()``: on the meta device, not
    initialised. The first of a spec is built and kept (never handed out); later ones are
    copies of it, where it can be copied (see the module's docstring)."""
    key = _key(name, kwargs)
    with _LOCK:
        kept = _SKELETONS.get(key) if key is not None else None
        if kept is not None:
            _SKELETONS.move_to_end(key)
    if kept is not None:
        return _copy(kept)
    with skeleton():
        model = create_model(name, **kwargs)
    if key is None or not _copyable(model):
        return model
    with _LOCK:
        _SKELETONS[key] = model
        while len(_SKELETONS) > _KEPT:
            _SKELETONS.popitem(last=False)
    return _copy(model)


def _key(name: str, kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """The cache key of a spec (with the builder itself: a test may swap a registry entry), or
    None where its arguments are not JSON (not kept)."""
    try:
        return name, get_entry(name).builder, json.dumps(kwargs, sort_keys=True)
    except (TypeError, ValueError):
        return None


def _plain(value: Any) -> bool:
    """Data a copy can duplicate by value: atoms, and lists, tuples, sets and dicts of them."""
    if isinstance(value, _ATOMS):
        return True
    if type(value) in (list, tuple, set, frozenset):
        return all(_plain(v) for v in value)
    if type(value) in (dict, OrderedDict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    return False


def _copyable(model: nn.Module) -> bool:
    for module in model.modules():
        if hasattr(module, "parametrizations") or module._non_persistent_buffers_set:
            return False
        if any(getattr(cls, "__slots__", ()) for cls in type(module).__mro__[:-1]):
            return False  # attributes outside __dict__, which the copy would miss
        for key, value in module.__dict__.items():
            # (a registered hook is a callable, so a module with one is not plain either)
            if key not in _TREE and not _plain(value):
                return False
    return True


def _copy_plain(value: Any) -> Any:
    if isinstance(value, _ATOMS) or type(value) is frozenset:
        return value
    if type(value) is tuple:
        return tuple(_copy_plain(v) for v in value)
    if type(value) in (list, set):
        return type(value)(_copy_plain(v) for v in value)
    return type(value)((k, _copy_plain(v)) for k, v in value.items())


def _copy(module: nn.Module) -> nn.Module:
    """The module tree again: new module objects with their own attribute values, children and
    tensor dicts (holding the same meta tensors)."""
    copy = object.__new__(type(module))
    attrs = {key: _copy_plain(value) for key, value in module.__dict__.items()
             if key not in _TREE}
    attrs["_parameters"] = type(module._parameters)(module._parameters)
    attrs["_buffers"] = type(module._buffers)(module._buffers)
    attrs["_modules"] = type(module._modules)(
        (name, None if child is None else _copy(child)) for name, child in module._modules.items())
    copy.__dict__.update(attrs)
    return copy


__all__ = ["create_skeleton"]
