"""Sparsity regularisers added to the training loss: L1 on weights (Han et al. 2015, arXiv
1506.02626, Sec. 3.1), group lasso over whole filters / input-channel slices (Wen et al.
2016, "Learning Structured Sparsity in Deep Neural Networks", arXiv 1608.03665), which drives
entire channels to zero so ``channel_prune.remove_dead_channels`` can cut them out, and L1 on
BatchNorm scales (Network Slimming, Liu et al. 2017, arXiv 1708.06519), the same for channels
behind BatchNorm, and the binarisation regulariser sum u^2 (1 - u^2), zero at u in {-1, 0, 1}
(the lecture's penalty toward binary weights, trained before BinaryConnect / XNOR binarization:
Courbariaux et al. 2015, arXiv 1511.00363; Rastegari et al. 2016, arXiv 1603.05279).

Pure penalty functions plus ``TrainHook``s that add ``weight * penalty`` in ``loss``.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn

from squeezelab.hooks import TrainHook, TrainState
from squeezelab.models import unwrap_model
from squeezelab.models.layer_roles import prunable_parameters
from squeezelab.train.config import BINARIZE_SCALES
from squeezelab.train.config import GROUP_LASSO_GROUPS as GROUPS


def l1_penalty(weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """sum over all tensors of sum |w| (float32)."""
    terms = [w.float().abs().sum() for w in weights]
    if not terms:
        raise ValueError("l1_penalty needs at least one weight tensor")
    return torch.stack(terms).sum()


def group_lasso_penalty(weight: torch.Tensor, groups: str = "out_channels") -> torch.Tensor:
    """Wen et al.'s group lasso of one Conv2d (out, in, kh, kw) or Linear (out, in) weight.

    "out_channels": sum over filters o of ||W[o, ...]||_2 (zeroes whole output channels);
    "in_channels": sum over input channels i of ||W[:, i, ...]||_2; "both": the sum of the two.
    Groups are not scaled by sqrt(group size) (Wen et al.'s Eq. 2 form).
    """
    if groups not in GROUPS:
        raise ValueError(f"groups must be one of {GROUPS}, got {groups!r}")
    if weight.dim() < 2:
        raise ValueError(f"group lasso needs a weight with (out, in, ...) dims, got shape "
                         f"{tuple(weight.shape)}")
    w = weight.float()
    total = w.new_zeros(())
    if groups in ("out_channels", "both"):
        total = total + w.flatten(1).norm(dim=1).sum()  # (out, in*kh*kw) -> (out,)
    if groups in ("in_channels", "both"):
        total = total + w.transpose(0, 1).flatten(1).norm(dim=1).sum()  # (in, out*kh*kw)
    return total


def binarize_penalty(weights: Iterable[torch.Tensor], scale: str = "filter") -> torch.Tensor:
    """sum over all tensors of sum u^2 (1 - u^2) (float32): 0 where u is -1, 0 or 1, at most
    1/4 (at |u| = 1/sqrt(2)); its gradient pushes |u| < 1/sqrt(2) to 0 and the rest to 1.

    ``scale="none"``: u = w, the literal penalty. It is meant for weights kept in [-1, 1]
    (BinaryConnect clips them there): outside that range it is negative and pushes |w| further
    out, and on weights of a trained float model (|w| ~ 0.01-0.1) it pulls nearly all of them
    to 0. ``scale="filter"``: u = w / m with m the largest |w| of the weight's output filter
    (row, for a Linear), held constant in the gradient. Then u is in [-1, 1] whatever the
    weights' scale (BatchNorm makes a filter's scale free), and the minima are w in {0, +-m}:
    a filter whose weights all sit at +-m is exactly XNOR's alpha * sign(w). But 0 is a
    minimum too, and in a bell-shaped filter most weights are below m / sqrt(2): the penalty
    makes filters ternary (0, +-m) more than binary, and a zero still binarizes to +-alpha
    (benchmarks/results/binarize_regularizer_small.json measured no gain). (At |u| = 1 the
    slope still points outward, -2 per unit of u: the penalty's minima on [-1, 1] are its ends
    and 0. Under "filter" the largest weight is therefore pushed out and carries the scale m
    with it, which BatchNorm absorbs and weight decay holds back.)
    """
    if scale not in BINARIZE_SCALES:
        raise ValueError(f"scale must be one of {BINARIZE_SCALES}, got {scale!r}")
    terms = []
    for w in weights:
        u = w.float()
        if scale == "filter":
            if u.dim() < 2:
                raise ValueError(f"scale='filter' needs a weight with (out, in, ...) dims, got "
                                 f"shape {tuple(w.shape)}")
            # (out, in, kh, kw) -> (out, 1, 1, 1): each filter's largest |w|; an all-zero
            # filter divides by 1 instead (its u stays 0, where the penalty is 0)
            m = u.detach().abs().flatten(1).amax(dim=1)
            m = torch.where(m > 0, m, torch.ones_like(m)).view(-1, *([1] * (u.dim() - 1)))
            u = u / m
        u2 = u * u
        terms.append((u2 * (1 - u2)).sum())
    if not terms:
        raise ValueError("binarize_penalty needs at least one weight tensor")
    return torch.stack(terms).sum()


def _select(model: nn.Module, include: Sequence[str] | None, exclude: Sequence[str]
            ) -> list[tuple[str, nn.Parameter]]:
    model = unwrap_model(model)
    params = dict(model.named_parameters())
    names = list(prunable_parameters(model))
    if include is not None:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in include)]
    names = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in exclude)]
    if not names:
        raise ValueError(f"no Conv2d/Linear weight of {type(model).__name__} matches include="
                         f"{include} exclude={list(exclude)}")
    return [(n, params[n]) for n in names]


class _PenaltyHook(TrainHook):
    """Shared part: parameter selection, ``loss`` adding weight * penalty, the epoch metric.
    ``penalty_fn`` maps the list of selected weights to a scalar tensor."""

    def __init__(self, weight: float, penalty_fn: Callable[[list[torch.Tensor]], torch.Tensor],
                 include: Sequence[str] | None = None, exclude: Sequence[str] = ()):
        self._penalty = penalty_fn
        if not weight >= 0:
            raise ValueError(f"regulariser weight must be >= 0, got {weight}")
        self.weight = float(weight)
        self.include = None if include is None else list(include)
        self.exclude = list(exclude)
        self._params: list[tuple[str, nn.Parameter]] = []
        self._last = 0.0

    def on_train_start(self, state: TrainState) -> None:
        self._params = self.parameters_of(state.model)

    def parameters_of(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """The penalised parameters: Conv2d/Linear weights filtered by include/exclude."""
        return _select(model, self.include, self.exclude)

    @torch.no_grad()
    def penalty(self, model: nn.Module | None = None) -> torch.Tensor:
        """The unweighted penalty of ``model`` (default: the training model), detached: for
        logging and tests; ``loss`` adds the differentiable ``weight * penalty``."""
        params = self._params if model is None else self.parameters_of(model)
        return self._penalty([p for _, p in params])

    def loss(self, state, images, labels, logits, loss) -> torch.Tensor:
        term = self.weight * self._penalty([p for _, p in self._params])
        self._last = term.detach()  # kept on device: read only at epoch end (no per-step sync)
        return loss + term.to(loss.dtype)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        metrics[f"{self.name}_penalty"] = float(self._last)

    def describe(self) -> str:
        return f"{self.name} (weight {self.weight:g})"


class L1Regularizer(_PenaltyHook):
    """Adds ``weight * sum |w|`` over Conv2d/Linear weights (filtered by include/exclude globs)."""

    name = "l1"

    def __init__(self, weight: float, include: Sequence[str] | None = None,
                 exclude: Sequence[str] = ()):
        super().__init__(weight, l1_penalty, include, exclude)


class GroupLassoRegularizer(_PenaltyHook):
    """Adds ``weight * sum of group_lasso_penalty(w, groups)`` over Conv2d/Linear weights."""

    name = "group_lasso"

    def __init__(self, weight: float, groups: str = "out_channels",
                 include: Sequence[str] | None = None, exclude: Sequence[str] = ()):
        if groups not in GROUPS:
            raise ValueError(f"groups must be one of {GROUPS}, got {groups!r}")
        self.groups = groups
        super().__init__(weight, self._group_penalty, include, exclude)

    def _group_penalty(self, weights: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([group_lasso_penalty(w, self.groups) for w in weights]).sum()


class BatchNormL1Regularizer(_PenaltyHook):
    """Adds ``weight * sum |gamma|`` over the BatchNorm scales (Network Slimming, Liu et al.
    2017, arXiv 1708.06519). Behind BatchNorm a filter's norm is rescaled away, so group lasso
    on conv weights barely changes a channel until its filter is almost exactly zero; a gamma
    near zero silences it, and ``prune --channels`` ranks channels by |gamma|
    (``channel_score`` auto / bn_scale). ``include``/``exclude``: globs over the BatchNorm
    weights' names (``features.1.weight``)."""

    name = "bn_l1"

    def __init__(self, weight: float, include: Sequence[str] | None = None,
                 exclude: Sequence[str] = ()):
        super().__init__(weight, l1_penalty, include, exclude)

    def parameters_of(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        model = unwrap_model(model)
        names = [f"{m}.weight" if m else "weight" for m, mod in model.named_modules()
                 if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.affine]
        if self.include is not None:
            names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in self.include)]
        names = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in self.exclude)]
        if not names:
            raise ValueError(f"{type(model).__name__} has no affine BatchNorm whose scale "
                             f"matches include={self.include} exclude={self.exclude}: "
                             "bn_l1 needs BatchNorm layers")
        params = dict(model.named_parameters())
        return [(n, params[n]) for n in names]


class BinarizeRegularizer(_PenaltyHook):
    """Adds ``weight * binarize_penalty(weights, scale)`` over Conv2d/Linear weights: trains a
    float model toward weights that binarize with little loss. ``keep_first_last`` (default)
    leaves the model's first and last Conv2d/Linear alone, the layers ``binarize_`` keeps
    real-valued by default (BinaryConnect and XNOR-Net keep them real)."""

    name = "binarize"

    def __init__(self, weight: float, scale: str = "filter", include: Sequence[str] | None = None,
                 exclude: Sequence[str] = (), keep_first_last: bool = True):
        if scale not in BINARIZE_SCALES:
            raise ValueError(f"scale must be one of {BINARIZE_SCALES}, got {scale!r}")
        self.scale = scale
        self.keep_first_last = bool(keep_first_last)
        super().__init__(weight, self._binarize_penalty, include, exclude)

    def _binarize_penalty(self, weights: list[torch.Tensor]) -> torch.Tensor:
        return binarize_penalty(weights, self.scale)

    def parameters_of(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        params = super().parameters_of(model)
        if self.keep_first_last:
            # the first and last Conv2d/Linear of the model in module order, as binarize_ keeps
            layers = [f"{n}.weight" for n, m in unwrap_model(model).named_modules()
                      if isinstance(m, (nn.Conv2d, nn.Linear))]
            ends = {layers[0], layers[-1]} if layers else set()
            params = [(n, p) for n, p in params if n not in ends]
            if not params:
                raise ValueError(f"{type(unwrap_model(model)).__name__} has no Conv2d/Linear "
                                 "weight besides the first and last: nothing to binarize "
                                 "(keep_first_last=False penalises those too)")
        return params


__all__ = ["BatchNormL1Regularizer", "BinarizeRegularizer", "GROUPS", "GroupLassoRegularizer",
           "L1Regularizer", "binarize_penalty", "group_lasso_penalty", "l1_penalty"]
