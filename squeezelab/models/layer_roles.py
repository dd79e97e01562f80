"""Which parameters of a model are layer weights, and what role each layer plays.

Pruning rules, weight sharing and the sparsity regularisers all name layers the same way: by a
glob over the parameter name or by a role (a Fire module's squeeze/expand1x1/expand3x3, the
classifier, a kernel size, conv or linear). It sits with the models because both train/ (the
regularisers) and compress/ (pruning, sharing) need it and neither may import the other.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from squeezelab.layers import Fire
from squeezelab.models.registry import unwrap_model

#: Layer types a rule may name instead of a glob. Most specific wins: role in a Fire module or
#: the classifier (the model's last Conv2d/Linear) > kernel size > kind.
LAYER_TYPES = (
    "squeeze", "expand1x1", "expand3x3", "classifier", "conv1x1", "conv3x3", "conv", "linear",
)


@dataclass(frozen=True)
class PrunableParam:
    name: str  # clean parameter name, e.g. "features.3.squeeze.weight"
    module_name: str
    types: tuple[str, ...]  # layer types from LAYER_TYPES, most specific first


def prunable_parameters(model: nn.Module) -> dict[str, PrunableParam]:
    """Weights of every Conv2d / Linear of ``model``, in module order, with their layer types."""
    model = unwrap_model(model)
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    fire_roles: dict[str, str] = {}
    for fname, m in model.named_modules():
        if isinstance(m, Fire):
            for role in ("squeeze", "expand1x1", "expand3x3"):
                # every conv of a factorised, flattened or separable expand3x3 plays its role
                for cname, conv in getattr(m, role).named_modules():
                    if isinstance(conv, nn.Conv2d):
                        path = ".".join(p for p in (fname, role, cname) if p)
                        fire_roles[path] = role
    out = {}
    for i, (mname, m) in enumerate(modules):
        types = []
        if mname in fire_roles:
            types.append(fire_roles[mname])
        if i == len(modules) - 1:
            types.append("classifier")  # the layer producing the logits
        if isinstance(m, nn.Conv2d):
            if tuple(m.kernel_size) == (1, 1):
                types.append("conv1x1")
            elif tuple(m.kernel_size) == (3, 3):
                types.append("conv3x3")
            types.append("conv")
        else:
            types.append("linear")
        pname = f"{mname}.weight" if mname else "weight"
        out[pname] = PrunableParam(pname, mname, tuple(types))
    return out


__all__ = ["LAYER_TYPES", "PrunableParam", "prunable_parameters"]
