"""Pruning masks and the training hook that keeps pruned weights at exactly zero.

One mechanism serves magnitude pruning (Han et al. 2015, "Learning both Weights and Connections
for Efficient Neural Networks", arXiv 1506.02626), gradual pruning schedules (Zhu & Gupta 2017,
arXiv 1710.01878) and dense-sparse-dense training (Han et al. 2016, arXiv 1607.04381): a
``Masks`` maps clean parameter names (``features.3.squeeze.weight``) to bool tensors of the
parameter's shape, True where the weight is kept. ``MaskHook`` enforces them inside the one
training loop; ``set_masks`` / ``clear`` change them mid-run (iterative schedules, DSD phases).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import torch
import torch.nn as nn

from squeezelab.hooks import TrainHook, TrainState
from squeezelab.models import unwrap_model


class Masks(MutableMapping[str, torch.Tensor]):
    """Clean parameter name -> bool tensor (True = kept). Values are stored as ``torch.bool``."""

    def __init__(self, masks: Mapping[str, torch.Tensor] | None = None):
        self._masks: dict[str, torch.Tensor] = {}
        for name, mask in (masks or {}).items():
            self[name] = mask

    # --- mapping protocol ---------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __setitem__(self, name: str, mask: torch.Tensor) -> None:
        if not torch.is_tensor(mask):
            raise TypeError(f"mask {name!r} must be a tensor, got {type(mask).__name__}")
        self._masks[name] = _as_bool(name, mask)

    def __delitem__(self, name: str) -> None:
        del self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Masks({len(self)} tensors, sparsity={self.sparsity():.4f})"

    # --- model side ---------------------------------------------------------------------
    def check(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The parameters the masks refer to; raises ValueError on an unknown name or shape."""
        params = dict(unwrap_model(model).named_parameters())
        out = {}
        for name, mask in self._masks.items():
            if name not in params:
                raise ValueError(
                    f"mask {name!r} names no parameter of {type(model).__name__} "
                    f"(parameters look like {list(params)[:3]})"
                )
            if params[name].shape != mask.shape:
                raise ValueError(
                    f"mask {name!r} has shape {tuple(mask.shape)}, but the parameter has "
                    f"{tuple(params[name].shape)}"
                )
            out[name] = params[name]
        return out

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights of ``model`` in place; returns the model."""
        for name, param in self.check(model).items():
            param.masked_fill_(~self._masks[name].to(param.device), 0)
        return model

    @classmethod
    def from_model(cls, model: nn.Module, names: list[str] | None = None) -> Masks:
        """Masks that keep the nonzero entries of the named parameters (default: all weights
        of Conv2d/Linear layers): recovers the masks of a pruned model."""
        model = unwrap_model(model)
        params = dict(model.named_parameters())
        if names is None:
            names = [
                f"{mname}.weight" if mname else "weight"
                for mname, m in model.named_modules()
                if isinstance(m, (nn.Conv2d, nn.Linear))
            ]
        missing = [n for n in names if n not in params]
        if missing:
            raise ValueError(f"parameters {missing[:3]} are not in {type(model).__name__}")
        return cls({n: params[n].detach() != 0 for n in names})

    # --- statistics ---------------------------------------------------------------------
    def num_kept(self) -> int:
        return int(sum(int(m.sum()) for m in self._masks.values()))

    def numel(self) -> int:
        return int(sum(m.numel() for m in self._masks.values()))

    def sparsity(self) -> float:
        """Fraction of masked-parameter entries that are pruned, over all masks (0.0 if none)."""
        total = self.numel()
        return 0.0 if total == 0 else 1.0 - self.num_kept() / total

    def layer_sparsity(self) -> dict[str, float]:
        """Per parameter name, the fraction of its entries that are pruned."""
        return {
            n: 1.0 - int(m.sum()) / m.numel() if m.numel() else 0.0
            for n, m in self._masks.items()
        }

    # --- conversion ---------------------------------------------------------------------
    def to(self, device: torch.device | str) -> Masks:
        return Masks({n: m.to(device) for n, m in self._masks.items()})

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """CPU bool tensors keyed by parameter name, ready for ``extra_tensors={"mask": ...}``
        (safetensors stores bool natively, one byte per entry)."""
        return {n: m.detach().cpu().contiguous() for n, m in self._masks.items()}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> Masks:
        """Inverse of ``to_tensors``; accepts bool or 0/1 integer tensors (e.g. uint8)."""
        return cls(tensors)

    def copy(self) -> Masks:
        return Masks({n: m.clone() for n, m in self._masks.items()})


def _as_bool(name: str, mask: torch.Tensor) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return mask.detach()
    if mask.is_floating_point() or mask.is_complex():
        raise TypeError(f"mask {name!r} must be bool or 0/1 integers, got dtype {mask.dtype}")
    if mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"mask {name!r} must hold only 0 and 1, got values {mask.unique()[:5]}")
    return mask.detach() != 0


class MaskHook(TrainHook):
    """Keeps pruned weights exactly zero through training.

    Per step: ``after_backward`` zeroes the gradients at pruned positions; ``after_step``
    re-applies the masks to the weights (weight decay and momentum would otherwise revive them)
    and zeroes the optimizer's per-parameter state tensors at pruned positions (SGD
    ``momentum_buffer``, Adam ``exp_avg`` / ``exp_avg_sq`` / ``max_exp_avg_sq``: every state
    tensor with the parameter's shape), so a mask that is later lifted (DSD) does not release
    stale momentum. ``on_epoch_end`` adds ``sparsity`` (fraction of masked entries pruned) to
    the epoch metrics. Masks are saved with the checkpoint (``state_tensors``) and restored on
    resume (``load_state_tensors``, called by the loop before ``on_train_start``).
    """

    name = "mask"

    def __init__(self, masks: Masks | Mapping[str, torch.Tensor] | None = None):
        self.masks = masks if isinstance(masks, Masks) else Masks(masks)
        self._model: nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        # (parameter, mask on its device) pairs, resolved once per mask change: no name lookups
        # on the per-step path.
        self._pairs: list[tuple[nn.Parameter, torch.Tensor]] = []

    # --- changing the masks -------------------------------------------------------------
    def set_masks(self, masks: Masks | Mapping[str, torch.Tensor]) -> None:
        """Replace the masks; when training has started they are applied at once."""
        self.masks = masks if isinstance(masks, Masks) else Masks(masks)
        self._bind()

    def clear(self) -> None:
        """Drop every mask: training is dense again (the dense phase of DSD)."""
        self.set_masks(Masks())

    def _bind(self) -> None:
        if self._model is None:
            return
        params = self.masks.check(self._model)
        self._pairs = []
        for name, param in params.items():
            mask = self.masks[name].to(param.device)
            self.masks[name] = mask
            self._pairs.append((param, mask))
        self._enforce()

    @torch.no_grad()
    def _enforce(self) -> None:
        for param, mask in self._pairs:
            param.masked_fill_(~mask, 0)
        if self._optimizer is not None:
            zero_optimizer_state_(self._optimizer, self._pairs)

    # --- hook protocol ------------------------------------------------------------------
    def on_train_start(self, state: TrainState) -> None:
        self._model = unwrap_model(state.model)
        self._optimizer = state.optimizer
        self._bind()

    @torch.no_grad()
    def after_backward(self, state: TrainState) -> None:
        for param, mask in self._pairs:
            if param.grad is not None:
                param.grad.masked_fill_(~mask, 0)

    def after_step(self, state: TrainState) -> None:
        self._enforce()

    def on_epoch_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        metrics["sparsity"] = self.masks.sparsity()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.masks.to_tensors()

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.set_masks(Masks.from_tensors(tensors))

    def describe(self) -> str:
        if not len(self.masks):
            return f"{self.name} (none yet)"
        return f"{self.name} ({len(self.masks)} tensors, {self.masks.sparsity():.1%} pruned)"


@torch.no_grad()
def zero_optimizer_state_(
    optimizer: torch.optim.Optimizer, pairs: list[tuple[nn.Parameter, torch.Tensor]]
) -> None:
    """Zero, at pruned positions, every optimizer state tensor shaped like its parameter."""
    for param, mask in pairs:
        state = optimizer.state.get(param)
        if not state:
            continue
        for value in state.values():
            if torch.is_tensor(value) and value.shape == param.shape:
                value.masked_fill_(~mask.to(value.device), 0)


__all__ = ["Masks", "MaskHook", "zero_optimizer_state_"]
