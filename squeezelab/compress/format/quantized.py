"""Checkpoints of quantized models: what ``squeezelab quantize -o OUT`` writes, and how any loader
(``load_compressible``, hence ``squeezelab.inference.load_model`` and every command that reads a
model) rebuilds it.

A quantized model is an ordinary checkpoint whose ``meta["quantizer"]`` records the quantizer
(its config type and config) plus the little the config alone does not determine (the rank each
low-rank layer was cut to). Loading creates a fresh model from the spec, applies the quantizer's
transform to it (the same module types and buffers, so the same state-dict keys and shapes) and
then loads the saved state over it: the integer weights, scales, fractional lengths and
shadow weights come from the file, never from the fresh model, so the loaded model computes what
the quantized one did.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from squeezelab.checkpoint import CheckpointError
from squeezelab.compress.quantization import (
    LowRankConfig,
    ProductQuantConfig,
    ResidualQuantConfig,
    factorize_layer,
)
from squeezelab.compress.quantization.registry import QUANTIZERS, Quantizer
from squeezelab.compress.quantization.select import set_module
from squeezelab.compress.quantization.weight_sharing import WeightSharingConfig

#: the meta key of the record
QUANTIZER_KEY = "quantizer"

#: quantizers that change weights but not modules: the saved state loads into a plain model
#: (weight sharing's modules are rebuilt from ``meta["shared_layers"]`` by load_compressible)
_SAME_MODULES = (WeightSharingConfig, ProductQuantConfig, ResidualQuantConfig)


def _quantizers_by_config() -> dict[str, Quantizer]:
    """Config class name -> its registered quantizer (``compress/quantization/registry.py``)."""
    out: dict[str, Quantizer] = {}
    for q in QUANTIZERS.values():
        out.setdefault(q.config_class.__name__, q)
    return out


def quantizer_record(config: Any, report: Any, method: str | None = None) -> dict[str, Any]:
    """The ``meta["quantizer"]`` of a model quantized with ``config`` (whose transform returned
    ``report``): the config type and values, the method's name, and for low-rank the rank of
    every layer that was factorised (the energy threshold alone would pick other ranks on other
    weights)."""
    name = type(config).__name__
    if name not in _quantizers_by_config():
        raise ValueError(f"config must be the config of a registered quantizer, one of "
                         f"{sorted(_quantizers_by_config())}, got {name}")
    record: dict[str, Any] = {"method": method or name, "config_type": name,
                              "config": config.to_dict()}
    if isinstance(config, LowRankConfig):
        record["factorized"] = {layer: int(row["rank"]) for layer, row in report.items()
                                if row.get("skipped") is None}
    return record


def _calibration_input(model: nn.Module, image_size: int | tuple[int, int]) -> torch.Tensor:
    """A batch that reaches every layer, so PTQ's observers all see an input; the input
    qparams it gives are replaced by the saved ones when the state is loaded."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    device = next(model.parameters()).device
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)


def rebuild_quantized_(model: nn.Module, record: Mapping[str, Any],
                       image_size: int | tuple[int, int] | None = None,
                       source: str = "checkpoint") -> nn.Module:
    """Give a freshly created ``model`` the module structure its quantized checkpoint's
    ``record`` describes (in place), ready for ``load_state_dict``. ``image_size``: the input
    size, for a calibrated quantizer's (int8's) pass. The quantizer is the one registered for
    the recorded config type; weight sharing is rebuilt from ``shared_layers`` by
    ``load_compressible``; product/residual quantization keep the module types (nothing to do).
    """
    quantizers = _quantizers_by_config()
    if not isinstance(record, Mapping) or record.get("config_type") not in quantizers:
        raise CheckpointError(f"{source}: meta 'quantizer' must name one of "
                              f"{sorted(quantizers)} as config_type, got {record!r:.200}")
    q = quantizers[record["config_type"]]
    try:
        config = q.config_class.from_dict(record.get("config") or {})
    except ValueError as e:
        raise CheckpointError(f"{source}: its quantizer config is not valid: {e}") from None
    if isinstance(config, _SAME_MODULES):
        return model
    if isinstance(config, LowRankConfig):
        # the energy threshold alone would choose other ranks on the fresh weights
        modules = dict(model.named_modules())
        for name, rank in (record.get("factorized") or {}).items():
            if name not in modules:
                raise CheckpointError(f"{source}: factorised layer {name!r} is not a layer of "
                                      f"{type(model).__name__}")
            # the fresh layer's own factors are placeholders: the saved ones load over them
            set_module(model, name, factorize_layer(modules[name], int(rank)))
        return model
    if q.calibrated:  # int8: observers need a pass; the saved input qparams replace theirs
        if image_size is None:
            raise CheckpointError(f"{source}: a calibrated quantizer's model needs its input "
                                  "size (meta image_size) to be rebuilt")
        q.transform(model, config, [_calibration_input(model, image_size)])
    else:  # binary, fixed point, ...: the same layer types, their buffers filled by the state
        q.transform(model, config)
    return model


__all__ = ["QUANTIZER_KEY", "quantizer_record", "rebuild_quantized_"]
