"""Layer pruning: whole Fire modules of a SqueezeNet (Iandola et al. 2016, arXiv 1602.07360)
replaced by the identity, where the shapes allow it.

A Fire maps ``inplanes`` channels to ``expand1x1 + expand3x3`` channels at the same spatial
size, so it can be dropped exactly where those two are equal: the layer after it then reads the
Fire's input instead of its output. With a bypass (simple, or complex whose bypass is the
identity because the widths are equal) the Fire computes ``x + F(x)`` and dropping it leaves
``x``: the residual branch is switched off, the usual way to drop a residual block. Without a
bypass the Fire's output ``F(x)`` itself is replaced by ``x``, a far larger change. A Fire whose
widths differ (a complex bypass then holds a 1x1 conv) is never removable.

The result is a fresh ``create_model(name, **kwargs, skip_fires=...)`` (SqueezeNet's own way of
building without a Fire) loaded with the remaining weights, so it saves and rebuilds through the
normal checkpoint path. Which Fires to drop is a measurement (the accuracy lost by each), done
by ``squeezelab.workflows.layer_pruning``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from squeezelab.layers import Fire
from squeezelab.models import create_model, model_spec, unwrap_model
from squeezelab.models.squeezenet import SqueezeNet


@dataclass
class FireRemovalReport:
    """What ``remove_fires`` did: ``removed`` Fire module names (old numbering) with their
    Fire index (position in the model's ``fire_config``), ``skip_fires`` of the new model and
    the parameter counts before and after."""

    removed: dict[str, int]
    skip_fires: list[int]
    params_before: int
    params_after: int

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _check_model(model: nn.Module) -> SqueezeNet:
    net = unwrap_model(model)
    if not isinstance(net, SqueezeNet):
        raise TypeError(f"layer pruning needs a SqueezeNet model, got {type(net).__name__}")
    model_spec(net)  # raises ValueError when the model cannot be rebuilt from the registry
    return net


def fire_modules(model: nn.Module) -> dict[str, tuple[int, Fire]]:
    """Every built Fire: module name (``features.4``) -> (Fire index in ``fire_config``,
    module), in order."""
    net = _check_model(model)
    fires = [(f"features.{i}", m) for i, m in net.features.named_children()
             if isinstance(m, Fire)]
    return {name: (index, fire) for (name, fire), index in zip(fires, net.fire_indices)}


def removable_fires(model: nn.Module) -> dict[str, str]:
    """The Fires whose input and output widths are equal, so that the identity can replace
    them: name -> ``"bypass"`` (dropping it switches off a residual branch) or ``"no bypass"``
    (its output itself is replaced by its input)."""
    out = {}
    for name, (_, fire) in fire_modules(model).items():
        if fire.inplanes == fire.out_channels:
            out[name] = "bypass" if fire.bypass is not None else "no bypass"
    return out


@torch.no_grad()
def remove_fires(model: nn.Module, names: Sequence[str]) -> tuple[nn.Module, FireRemovalReport]:
    """Rebuild ``model`` without the Fire modules ``names`` (``features.4``, ...), each
    replaced by the identity. The input model is not changed; the new one is in the input's
    train/eval mode and computes exactly what the input computes with those Fires' forward
    replaced by ``x -> x``."""
    net = _check_model(model)
    fires = fire_modules(net)
    allowed = removable_fires(net)
    names = list(dict.fromkeys(names))
    for name in names:
        if name not in fires:
            raise ValueError(f"{name!r} is not a Fire module of this SqueezeNet; its Fires "
                             f"are {list(fires)}")
        if name not in allowed:
            _, fire = fires[name]
            raise ValueError(f"{name!r} maps {fire.inplanes} channels to {fire.out_channels}: "
                             "only a Fire with equal input and output widths can be replaced "
                             f"by the identity (removable: {list(allowed) or 'none'})")
    spec = model_spec(net)
    removed = {name: fires[name][0] for name in names}
    skip = sorted(set(spec["kwargs"].get("skip_fires", ())) | set(removed.values()))
    kwargs = dict(spec["kwargs"], skip_fires=skip)
    new = create_model(spec["name"], **kwargs)
    # features.K of the old model -> features.K' of the new one: the same children in order,
    # less the removed Fires
    old_children = [n for n, _ in net.features.named_children() if f"features.{n}" not in removed]
    new_children = [n for n, _ in new.features.named_children()]
    if len(old_children) != len(new_children):  # pragma: no cover - the builder's layout
        raise RuntimeError(f"rebuilt features have {len(new_children)} children, expected "
                           f"{len(old_children)}")
    rename = {f"features.{o}.": f"features.{n}." for o, n in zip(old_children, new_children)}
    state = {}
    for key, value in net.state_dict().items():
        if key.startswith("features."):
            prefix = "features." + key.split(".", 2)[1] + "."
            if prefix[:-1] in removed:
                continue
            key = rename[prefix] + key[len(prefix):]
        state[key] = value.detach().clone()
    new.load_state_dict(state, strict=True)
    new.train(net.training)
    report = FireRemovalReport(
        removed=removed, skip_fires=skip,
        params_before=sum(p.numel() for p in net.parameters()),
        params_after=sum(p.numel() for p in new.parameters()))
    return new, report


__all__ = ["FireRemovalReport", "fire_modules", "removable_fires", "remove_fires"]
