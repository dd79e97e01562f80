"""Weight sharing trained through the assignments: every kept weight may change cluster.

Deep Compression's fine-tuning after sharing (``weight_sharing``) trains the centroids only:
each weight's cluster is fixed at sharing time. Here each kept weight of a shared layer also
keeps a float value of its own, ``module.latent_weight``, trained with a straight-through
estimator (Bengio et al. 2013, arXiv 1308.3432; the usual quantization-aware training): the
forward pass computes with the weight's centroid, the backward pass hands the weight's
gradient to its centroid (the paper's centroid gradient, as before) and to its latent value,
and before every forward pass each kept weight moves to its cheapest cluster for its latent
value: the nearest centroid, or with entropy-constrained sharing (``entropy_weight`` > 0) the
nearest after pricing each cluster's code length at its current share, the rule the sharing
itself assigned by, so the file's rate stays near where the sharing put it.

* ``enable_reassignment_(model, originals, entropy_weight)``: give every shared layer its
  latent weights (from ``originals``, the weights before sharing, where given) and the hooks;
* ``freeze_assignments_(model)``: assign once more, drop the latent weights and hooks, and
  say how many weights changed cluster. The model is then an ordinary shared model.

While enabled, ``weight_indices`` always holds the assignments of the last forward pass and
the state dict leaves ``latent_weight`` out, so a checkpoint written mid-run is an ordinary
shared model (a run resumed from it starts again from its centroids). Pruned weights stay
exactly zero: they are in no cluster and their latent values get no gradient.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from squeezelab.compress.quantization.kmeans import assign_with_rate
from squeezelab.compress.quantization.weight_sharing import (
    dense_weight,
    layer_rate_weight,
    shared_modules,
)

_LATENT = "latent_weight"


def _rate_bits(module: nn.Module) -> torch.Tensor:
    """Each cluster's code length (bits) at its current share of the kept weights; inf for
    an empty cluster, which entropy-constrained assignment never refills (as in the fit)."""
    kept = module.weight_indices[module.weight_mask].long()
    counts = torch.bincount(kept, minlength=module.codebook.numel()).double()
    share = counts / max(int(kept.numel()), 1)
    return torch.where(counts > 0, -torch.log2(share.clamp_min(1e-300)),
                       torch.full_like(share, float("inf")))


@torch.no_grad()
def _reassign(module: nn.Module) -> None:
    if not module.reassign_any_kept:  # a fully pruned layer: nothing to assign
        return
    mask = module.weight_mask
    latent = getattr(module, _LATENT).detach()
    rate_weight = module.reassign_rate_weight
    rates = _rate_bits(module) if rate_weight > 0 else torch.zeros_like(module.codebook)
    chosen = assign_with_rate(latent[mask], module.codebook.detach(), rates, rate_weight)
    module.weight_indices[mask] = chosen.to(module.weight_indices.dtype)


def _reassign_pre_hook(module: nn.Module, args: Any) -> None:
    _reassign(module)  # before weight_sharing's hook builds the weight from the indices


def _straight_through_hook(module: nn.Module, args: Any) -> None:
    # after weight_sharing's hook: the value stays codebook[indices], the gradient reaches
    # the latent weights too (zero where pruned)
    latent = getattr(module, _LATENT)
    through = torch.where(module.weight_mask, latent - latent.detach(), latent.new_zeros(()))
    module.weight = module.weight + through


def _drop_latent(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    state_dict.pop(prefix + _LATENT, None)


def is_reassigning(module: nn.Module) -> bool:
    """True while ``module`` trains its assignments (``enable_reassignment_``)."""
    return _LATENT in module._parameters


def enable_reassignment_(model: nn.Module, originals: Mapping[str, torch.Tensor] | None = None,
                         entropy_weight: float = 0.0) -> list[str]:
    """Let every shared layer of ``model`` reassign its kept weights while it trains.

    ``originals``: ``{weight name: tensor}``, the layers' weights before sharing, where each
    latent weight starts (default: its centroid, so nothing moves until training moves it).
    ``entropy_weight``: the sharing's (``WeightSharingConfig.entropy_weight``); above 0 a weight
    goes to the cluster of least squared error plus that weight times the variance of the
    layer's kept weights times the cluster's code length. Returns the layers' weight names.
    """
    if not entropy_weight >= 0 or entropy_weight == float("inf"):
        raise ValueError(f"entropy_weight must be a finite number >= 0, got {entropy_weight!r}")
    modules = shared_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no shared layer: share its weights "
                         "(share_weights_) before enabling reassignment")
    originals = dict(originals or {})
    unknown = sorted(set(originals) - set(modules))
    if unknown:
        raise ValueError(f"originals name layers that are not shared: {unknown}")
    for name, module in modules.items():
        if is_reassigning(module):
            raise ValueError(f"layer {name!r} already reassigns its weights")
        shape = tuple(module.weight_indices.shape)
        if name in originals and tuple(originals[name].shape) != shape:
            raise ValueError(f"originals[{name!r}] has shape {tuple(originals[name].shape)}, "
                             f"the layer's weight {shape}")
    names = []
    for name, module in modules.items():
        mask = module.weight_mask
        with torch.no_grad():
            start = originals.get(name)
            start = (module.codebook[module.weight_indices.long()] if start is None
                     else start.detach().to(module.codebook))
            latent = torch.where(mask, start, torch.zeros((), dtype=start.dtype,
                                                          device=start.device)).clone()
        module.register_parameter(_LATENT, nn.Parameter(
            latent, requires_grad=module.codebook.requires_grad))
        # the mask never changes while reassigning: read it once, not every forward
        module.reassign_any_kept = bool(mask.any())
        module.reassign_rate_weight = layer_rate_weight(latent[mask], entropy_weight)
        module._reassign_start = module.weight_indices.clone()
        module._reassign_handles = (
            module.register_forward_pre_hook(_reassign_pre_hook, prepend=True),
            module.register_forward_pre_hook(_straight_through_hook),
            module._register_state_dict_hook(_drop_latent),
        )
        names.append(name)
    return names


def freeze_assignments_(model: nn.Module) -> dict[str, dict[str, int]]:
    """Assign every reassigning layer's weights once more from their latent values, then drop
    the latent weights and hooks: ``model`` is an ordinary shared model again. Returns
    ``{weight name: {"kept": kept weights, "moved": how many are in another cluster than at
    enable_reassignment_}}``."""
    moved: dict[str, dict[str, int]] = {}
    for name, module in shared_modules(model).items():
        if not is_reassigning(module):
            continue
        _reassign(module)
        mask = module.weight_mask
        changed = (module.weight_indices != module._reassign_start.to(
            module.weight_indices.device)) & mask
        moved[name] = {"kept": int(mask.sum()), "moved": int(changed.sum())}
        for handle in module._reassign_handles:
            handle.remove()
        del module._reassign_handles, module._reassign_start
        del module.reassign_rate_weight, module.reassign_any_kept
        del module._parameters[_LATENT]
        with torch.no_grad():  # the weight as the last forward would compute it
            module.weight = dense_weight(module.codebook, module.weight_indices, mask)
    return moved


__all__ = ["enable_reassignment_", "freeze_assignments_", "is_reassigning"]
