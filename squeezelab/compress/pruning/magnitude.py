"""Magnitude pruning (Han et al. 2015, "Learning both Weights and Connections for Efficient
Neural Networks", arXiv 1506.02626): per layer to a sparsity, with one threshold across layers,
or by the paper's own per-layer rule, threshold = quality parameter x the layer's weight
standard deviation (``method="threshold"``). Whole k x k kernels at once on request
(``granularity="kernel"``; Mao et al. 2017, "Exploring the Granularity of Sparsity in
Convolutional Neural Networks", arXiv 1705.08922): a kernel kept or pruned as one costs the
file one position for its k*k weights, where single weights each need their own.

Pure tensor functions (``magnitude_mask``, ``global_magnitude_masks``) under a thin in-place
model transform (``prune_``) driven by a typed ``PruneConfig``. Only weights of Conv2d and
Linear layers are prunable; biases and BatchNorm parameters never are.
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn

from squeezelab.compress.pruning.masks import Masks
from squeezelab.config import ConfigBase, ConfigError
from squeezelab.models import unwrap_model
from squeezelab.models.layer_roles import (
    LAYER_TYPES,
    PrunableParam,
    prunable_parameters,
)

SCOPES = ("layer", "global")
#: "magnitude": prune each layer to a sparsity (the k smallest |w|); "threshold": prune
#: |w| < quality * std(w) per layer (Han et al.'s rule), whatever fraction that is
METHODS = ("magnitude", "threshold")
#: "element": each weight kept or pruned on its own; "kernel": each k x k kernel of a conv
#: (one input channel of one filter) as a whole, ranked by the sum of its |w| (1x1 convs and
#: linear layers, whose kernels are single weights, are pruned by element either way)
GRANULARITIES = ("element", "kernel")
_SPECIFICITY = {t: i for i, t in enumerate(LAYER_TYPES)}


def _check_sparsity(sparsity: float, what: str = "sparsity") -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise ConfigError(f"{what} must be a number in [0, 1), got {sparsity!r}")
    if not (0.0 <= float(sparsity) < 1.0):
        raise ValueError(f"{what} must be in [0, 1), got {sparsity}")
    return float(sparsity)


def _check_quality(quality: float, what: str = "quality") -> float:
    if isinstance(quality, bool) or not isinstance(quality, (int, float)) or not quality >= 0 \
            or not math.isfinite(quality):
        raise ConfigError(f"{what} must be a finite number >= 0 (prune |w| < quality * std), "
                          f"got {quality!r}")
    return float(quality)


def num_to_keep(numel: int, sparsity: float) -> int:
    """k = N (1 - sparsity) entries kept, the pruned count rounded half up: N - floor(N s + 1/2).

    The 1e-9 guards against float error (0.29 * 100 = 28.999999999999996 must prune 29).
    """
    _check_sparsity(sparsity)
    return numel - min(numel, math.floor(numel * sparsity + 0.5 + 1e-9))


def _keep_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask keeping the k largest scores of a 1-D tensor; ties go to the lower index."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        # A stable descending sort keeps equal scores in index order: deterministic ties.
        order = torch.sort(scores, descending=True, stable=True).indices
        mask[order[:k]] = True
    return mask


def _scores(weight: torch.Tensor, keep: torch.Tensor | None, name: str = "weight") -> torch.Tensor:
    scores = weight.detach().abs().flatten().float()
    if not torch.isfinite(scores).all():
        raise ValueError(f"{name} holds NaN or infinite values; cannot rank by magnitude")
    if keep is not None:
        if keep.shape != weight.shape:
            raise ValueError(
                f"current mask of {name} has shape {tuple(keep.shape)}, expected "
                f"{tuple(weight.shape)}"
            )
        # Already-pruned entries rank below every kept one (scores are >= 0), so a higher
        # sparsity prunes among the still-kept weights and never revives a pruned one.
        scores = torch.where(keep.flatten().to(scores.device), scores, torch.full_like(scores, -1))
    return scores


def magnitude_mask(
    weight: torch.Tensor, sparsity: float, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Bool mask keeping exactly k = N (1 - sparsity) entries of largest |w| (see num_to_keep).

    Equal magnitudes at the threshold are kept in flat-index order (lower index first).
    ``keep`` (bool, weight's shape) restricts the choice to the still-kept entries first.
    """
    k = num_to_keep(weight.numel(), sparsity)
    return _keep_top(_scores(weight, keep), k).view(weight.shape)


def kernel_magnitude_mask(
    weight: torch.Tensor, sparsity: float, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Bool mask of a conv weight ``(out, in, kh, kw)`` keeping exactly k = num_to_keep(out *
    in, sparsity) whole kernels: those of largest sum of |w| (ties to the lower index). With
    ``keep``, a kernel is scored by its still-kept weights, an emptied kernel never comes
    back, and a kept kernel keeps only the weights ``keep`` kept (so masks made by kernel all
    along stay whole kernels). A weight whose kernels are single weights (1x1 convs, linear
    layers) is pruned by element: ``magnitude_mask``."""
    if weight.dim() != 4 or weight.shape[2] * weight.shape[3] == 1:
        return magnitude_mask(weight, sparsity, keep)
    scores = _scores(weight, keep).clamp(min=0).view(*weight.shape[:2], -1).sum(-1)
    if keep is not None:  # kernels with no kept weight rank below every other
        alive = keep.view(*weight.shape[:2], -1).any(-1).to(scores.device)
        scores = torch.where(alive, scores, torch.full_like(scores, -1))
    kernels = _keep_top(scores.flatten(), num_to_keep(scores.numel(), sparsity))
    mask = kernels.view(*weight.shape[:2], 1, 1).expand(weight.shape).clone()
    return mask if keep is None else mask & keep.to(mask.device)


def threshold_mask(
    weight: torch.Tensor, quality: float, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Han et al.'s per-layer rule: bool mask keeping |w| >= quality * std, pruning the
    entries with |w| < quality * std, where std is the population standard deviation (divided
    by N) of the layer's weights, or of its still-kept ones when ``keep`` is given (so another
    round prunes further, as the paper's iterations do). Pruned entries stay pruned."""
    if isinstance(quality, bool) or not isinstance(quality, (int, float)) or not quality >= 0:
        raise ValueError(f"quality must be a number >= 0, got {quality!r}")
    w = weight.detach().float()
    if not torch.isfinite(w).all():
        raise ValueError("weight holds NaN or infinite values; cannot take its standard "
                         "deviation")
    if keep is not None and keep.shape != weight.shape:
        raise ValueError(f"current mask has shape {tuple(keep.shape)}, expected "
                         f"{tuple(weight.shape)}")
    kept = w if keep is None else w[keep.to(w.device)]
    if kept.numel() == 0:
        return torch.zeros_like(weight, dtype=torch.bool)
    threshold = quality * kept.std(correction=0)
    mask = w.abs() >= threshold
    return mask if keep is None else mask & keep.to(mask.device)


def global_magnitude_masks(
    weights: Mapping[str, torch.Tensor],
    sparsity: float,
    keep: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """One magnitude threshold across all ``weights``: exactly k = N (1 - sparsity) entries
    kept over the union (N = total entries), ties to the earlier tensor, then lower index."""
    names = list(weights)
    if not names:
        return {}
    keep = keep or {}
    scores = [_scores(weights[n], keep.get(n), n) for n in names]
    flat = torch.cat([s.to(scores[0].device) for s in scores])
    mask = _keep_top(flat, num_to_keep(flat.numel(), sparsity))
    out, start = {}, 0
    for n in names:
        size = weights[n].numel()
        out[n] = mask[start:start + size].view(weights[n].shape).to(weights[n].device)
        start += size
    return out


def _matches(pattern: str, p: PrunableParam) -> bool:
    if pattern in _SPECIFICITY:
        return pattern in p.types
    return fnmatch.fnmatchcase(p.name, pattern) or fnmatch.fnmatchcase(p.module_name, pattern)


@dataclass
class PruneConfig(ConfigBase):
    """What to prune and how far.

    sparsity: target fraction pruned (0..1) for every prunable weight no rule names; None
        prunes only the layers named by ``rules``.
    rules: per-layer targets, key -> sparsity. A key is a layer type (LAYER_TYPES: "conv",
        "linear", "classifier", "conv1x1", "conv3x3", "squeeze", "expand1x1", "expand3x3") or
        a glob over parameter or module names ("features.3.*"). Globs win over types (the first
        matching glob in order); among types the most specific wins (see LAYER_TYPES).
    scope: "layer" prunes each tensor to its own target; "global" ranks all weights that no
        rule names against one threshold at ``sparsity`` (rule-named layers keep their own).
    exclude: layer types or globs never pruned (e.g. ["classifier"]).
    method: "magnitude" (the above: each layer to a sparsity) or "threshold" (Han et al.'s
        rule: prune |w| < quality * std of the layer's weights). With "threshold", ``quality``
        is the default q of every layer no rule names, ``rules`` map layers to their own q
        (>= 0, may exceed 1), ``sparsity`` must be unset and ``scope`` "layer".
    quality: the q of ``method: threshold``.
    granularity: "element" (each weight on its own) or "kernel" (each k x k kernel of a conv
        as one, ``kernel_magnitude_mask``; method "magnitude", scope "layer").

    ``from_dict`` / ``to_dict`` / ``from_yaml`` come from ``ConfigBase``.
    """

    sparsity: float | None = None
    rules: dict[str, float] = field(default_factory=dict)
    scope: str = "layer"
    exclude: list[str] = field(default_factory=list)
    method: str = "magnitude"
    quality: float | None = None
    granularity: str = "element"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"granularity must be one of {GRANULARITIES}, got "
                              f"{self.granularity!r}")
        if self.granularity == "kernel" and (self.method != "magnitude"
                                             or self.scope != "layer"):
            raise ConfigError("granularity 'kernel' prunes each layer's kernels to the layer's "
                              f"sparsity: it needs method 'magnitude' and scope 'layer', got "
                              f"method {self.method!r} and scope {self.scope!r}")
        threshold = self.method == "threshold"
        if self.sparsity is not None:
            if threshold:
                raise ConfigError("method 'threshold' prunes |w| < quality * std per layer: "
                                  f"give quality, not sparsity (got sparsity={self.sparsity})")
            self.sparsity = _check_sparsity(self.sparsity)
        if self.quality is not None:
            if not threshold:
                raise ConfigError(f"quality applies to method 'threshold' only (got quality="
                                  f"{self.quality} with method {self.method!r})")
            self.quality = _check_quality(self.quality)
        if threshold and self.scope != "layer":
            raise ConfigError(f"method 'threshold' sets each layer's threshold from its own "
                              f"standard deviation: scope must be 'layer', got {self.scope!r}")
        if not isinstance(self.rules, Mapping):
            raise ConfigError(f"rules must be a mapping of layer type/glob -> "
                              f"{'quality' if threshold else 'sparsity'}, got "
                              f"{type(self.rules).__name__}")
        if threshold:
            self.rules = {str(k): _check_quality(v, f"quality of rule {k!r}")
                          for k, v in self.rules.items()}
        else:
            self.rules = {str(k): _check_sparsity(v, f"sparsity of rule {k!r}")
                          for k, v in self.rules.items()}
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if isinstance(self.exclude, str):
            raise ConfigError(f"exclude must be a list of layer types/globs, got the string "
                              f"{self.exclude!r}")
        self.exclude = [str(e) for e in self.exclude]
        if threshold and self.quality is None and not self.rules:
            raise ValueError("PruneConfig with method 'threshold' needs a quality or at least "
                             "one rule")
        if not threshold and self.sparsity is None and not self.rules:
            raise ValueError("PruneConfig needs a sparsity or at least one rule")

    @property
    def default_target(self) -> float | None:
        """The target of every layer no rule names: the sparsity, or the threshold's quality."""
        return self.quality if self.method == "threshold" else self.sparsity

    def map_sparsity(self, fn: Callable[[float], float]) -> PruneConfig:
        """A copy with every target s replaced by fn(s): schedules ramp each layer toward its
        own final target this way. A "threshold" config has no sparsity to ramp: it comes back
        unchanged, and each round prunes the still-kept weights below q times their standard
        deviation, further every round, as Han et al.'s iterations did."""
        if self.method == "threshold":
            return replace(self, rules=dict(self.rules), exclude=list(self.exclude))
        return replace(
            self,
            sparsity=None if self.sparsity is None else fn(self.sparsity),
            rules={k: fn(v) for k, v in self.rules.items()},
            exclude=list(self.exclude),
        )

    def layer_targets(self, model: nn.Module) -> dict[str, float | None]:
        """Per prunable parameter name: its own target (rule), or None for "the default"
        (``sparsity``, per layer or global; ``quality`` for method "threshold"). Excluded and
        unnamed-without-default layers are left out. Raises ValueError when a rule or exclusion
        matches no prunable parameter (a typo would otherwise prune nothing, silently)."""
        params = prunable_parameters(model)
        for pattern in list(self.rules) + self.exclude:
            if not any(_matches(pattern, p) for p in params.values()):
                raise ValueError(
                    f"rule/exclusion {pattern!r} matches no prunable parameter of "
                    f"{type(unwrap_model(model)).__name__} (names look like {list(params)[:3]}; "
                    f"layer types are {LAYER_TYPES})"
                )
        globs = [k for k in self.rules if k not in _SPECIFICITY]
        types = sorted((k for k in self.rules if k in _SPECIFICITY), key=_SPECIFICITY.get)
        out: dict[str, float | None] = {}
        for name, p in params.items():
            if any(_matches(e, p) for e in self.exclude):
                continue
            target = next((self.rules[g] for g in globs if _matches(g, p)), None)
            if target is None:
                target = next((self.rules[t] for t in types if t in p.types), None)
            if target is not None:
                out[name] = target
            elif self.default_target is not None:
                out[name] = None
        return out


def compute_masks(
    model: nn.Module, config: PruneConfig | float, keep: Masks | None = None
) -> Masks:
    """Magnitude masks for ``model`` under ``config`` without changing the model.

    ``keep`` (current masks) makes pruning proceed among the still-kept weights.
    """
    if not isinstance(config, PruneConfig):
        config = PruneConfig(sparsity=config)
    params = dict(unwrap_model(model).named_parameters())
    keep = keep or Masks()
    targets = config.layer_targets(model)
    masks = Masks()
    default_names = [n for n, t in targets.items() if t is None]
    if config.scope == "global" and default_names:
        shared = global_magnitude_masks(
            {n: params[n] for n in default_names}, config.sparsity,
            {n: keep[n] for n in default_names if n in keep},
        )
    else:
        shared = {}
    for name, target in targets.items():
        if config.method == "threshold":
            q = config.quality if target is None else target
            masks[name] = threshold_mask(params[name], q, keep.get(name))
        elif name in shared:
            masks[name] = shared[name]
        else:
            s = config.sparsity if target is None else target
            by = kernel_magnitude_mask if config.granularity == "kernel" else magnitude_mask
            masks[name] = by(params[name], s, keep.get(name))
    return masks


def prune_(model: nn.Module, config: PruneConfig | float, keep: Masks | None = None) -> Masks:
    """Prune ``model`` in place by weight magnitude; returns the masks (True = kept).

    A float is shorthand for ``PruneConfig(sparsity=...)``. Keep the masks enforced while
    retraining with ``MaskHook(masks)``.
    """
    masks = compute_masks(model, config, keep)
    masks.apply_(model)
    return masks


__all__ = [
    "GRANULARITIES", "LAYER_TYPES", "METHODS", "PruneConfig", "threshold_mask", "PrunableParam",
    "compute_masks", "global_magnitude_masks", "kernel_magnitude_mask", "magnitude_mask",
    "num_to_keep", "prunable_parameters", "prune_",
]
