"""Checkpoints of masked and weight-shared models (the Deep Compression pipeline's phases).

``save_compressible`` writes an ordinary squeezelab checkpoint plus what is needed to rebuild the
compression state: ``meta["shared_layers"]`` (``{weight name: bits}``) and the pruning masks as
the ``mask`` tensor group. ``load_compressible`` reads any squeezelab checkpoint back, rebuilding
weight-shared layers (and quantized ones, ``quantized.py``) before the state is loaded.
``squeezelab/checkpoint.py`` does not know about compression; this module is where the two meet.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from squeezelab.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    with_weight_average,
)
from squeezelab.compress.format.quantized import QUANTIZER_KEY, rebuild_quantized_
from squeezelab.compress.pruning.architecture import install_gates_from_state_
from squeezelab.compress.pruning.masks import Masks
from squeezelab.compress.quantization.weight_sharing import (
    dense_weight,
    layer_bits_from_state_dict,
    prepare_shared_,
    shared_layer_bits,
    shared_modules,
)
from squeezelab.models import create_model
from squeezelab.models.registry import get_entry


@dataclass
class Compressible:
    """A model read by ``load_compressible``: weight-shared layers rebuilt, masks recovered."""

    model: nn.Module
    meta: dict[str, Any]
    masks: Masks | None



def save_compressible(
    path: str | os.PathLike, model: nn.Module, *, masks: Masks | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """``save_checkpoint`` plus what ``load_compressible`` needs: ``meta["shared_layers"]``
    (``{weight name: bits}``) and the masks as the ``mask`` tensor group."""
    meta = dict(meta or {})
    meta["shared_layers"] = shared_layer_bits(model)
    extra = {"mask": masks.to_tensors()} if masks is not None and len(masks) else None
    return save_checkpoint(path, model, meta=meta, extra_tensors=extra)


def load_compressible(path: str | os.PathLike, *, average: bool = False) -> Compressible:
    """Rebuild the model of any squeezelab checkpoint, including weight-shared ones.

    The shared layers come from ``meta["shared_layers"]`` or, for checkpoints written by a
    training run over a shared model, from the ``*.codebook`` entries of the state; tri-state
    ReLU gates (an architecture-learning run's) from its ``*.gate_w`` entries. Masks come
    from the ``mask`` group (``save_compressible``) or a MaskHook's ``hook.mask`` group (a run
    directory's checkpoint); None when there are none. ``average``: load the moving average of
    the weights that a training run keeps beside them (``with_weight_average``) instead.
    """
    ckpt = load_checkpoint(path)
    if average:
        ckpt = with_weight_average(ckpt, source=str(path))
    spec = ckpt.meta.get("model")
    if not spec:
        raise CheckpointError(f"{path} does not name the model it holds; cannot rebuild it")
    model = create_model(spec["name"], **spec["kwargs"])
    if ckpt.meta.get(QUANTIZER_KEY) is not None:  # written by ``squeezelab quantize``
        size = ckpt.meta.get("image_size") or get_entry(spec["name"]).default_input_size
        rebuild_quantized_(model, ckpt.meta[QUANTIZER_KEY], size, source=str(path))
    layer_bits = ckpt.meta.get("shared_layers")
    if layer_bits is None:
        layer_bits = layer_bits_from_state_dict(ckpt.model_state)
    if not isinstance(layer_bits, Mapping):
        raise CheckpointError(f"{path}: meta 'shared_layers' must map weight names to bits, "
                              f"got {type(layer_bits).__name__}")
    try:
        prepare_shared_(model, dict(layer_bits))
    except ValueError as e:
        raise CheckpointError(f"{path}: shared layers do not fit {spec['name']}: {e}") from None
    try:  # an architecture-learning run's model: tri-state ReLU gates where its state has them
        install_gates_from_state_(model, ckpt.model_state)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: gates do not fit {spec['name']}: {e}") from None
    load_model_state(model, ckpt, source=str(path))
    refresh_shared(model)
    model.eval()
    mask_tensors = ckpt.group("mask") or ckpt.group("hook.mask")
    masks = Masks.from_tensors(mask_tensors) if mask_tensors else None
    if masks is not None:
        # a shared layer carries its mask as weight_mask: keep the masks of the others only
        shared = set(shared_modules(model))
        masks = Masks({n: m for n, m in masks.items() if n not in shared})
        masks.check(model)
    return Compressible(model=model, meta=ckpt.meta, masks=masks)


def refresh_shared(model: nn.Module) -> None:
    """Recompute the cached dense weight of every shared layer (valid outside a forward)."""
    with torch.no_grad():
        for m in shared_modules(model).values():
            m.weight = dense_weight(m.codebook, m.weight_indices, m.weight_mask)


__all__ = ["Compressible", "load_compressible", "refresh_shared", "save_compressible"]
