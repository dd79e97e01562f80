"""Pruning: magnitude pruning per layer or global, or by Han et al.'s threshold rule (arXiv
1506.02626), masks and the hook that keeps pruned weights at zero while training, iterative and
gradual schedules, per-layer sensitivity, physical channel removal (``channels``), whole Fire
modules replaced by the identity (``fire_removal``) and architecture learning's gates and cut
(``architecture``, Srinivas & Babu, arXiv 1511.05497)."""
from squeezelab.compress.pruning.magnitude import (
    PruneConfig,
    compute_masks,
    global_magnitude_masks,
    magnitude_mask,
    prune_,
)
from squeezelab.compress.pruning.masks import MaskHook, Masks
from squeezelab.compress.pruning.schedules import GradualPruneHook, IterativePruneHook
from squeezelab.models.layer_roles import (
    LAYER_TYPES,
    PrunableParam,
    prunable_parameters,
)

__all__ = ["GradualPruneHook", "IterativePruneHook", "LAYER_TYPES", "MaskHook", "Masks",
           "PrunableParam", "PruneConfig", "compute_masks", "global_magnitude_masks",
           "magnitude_mask", "prunable_parameters", "prune_"]
