"""``quantize_(model, config)``: one entry point over every quantizer, chosen by config type.

K-means weight sharing (Deep Compression, arXiv 1510.00149), uniform affine int8 (arXiv
1712.05877), BinaryConnect / XNOR (arXiv 1511.00363, 1603.05279), fixed point (arXiv
1412.7024), product and residual quantization (arXiv 1412.6115) and low-rank factorisation
(arXiv 1404.0736): see ``weight_sharing.py`` and ``quant/``.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch.nn as nn

from squeezelab.compress.quantization import (
    BinaryConfig,
    FixedPointConfig,
    LowRankConfig,
    ProductQuantConfig,
    ResidualQuantConfig,
    UniformQuantConfig,
    binarize_,
    fixed_point_,
    low_rank_,
    product_quantize_,
    quantize_ptq_,
    residual_quantize_,
)
from squeezelab.compress.quantization.weight_sharing import (
    WeightSharingConfig,
    share_weights_,
)

#: config type -> in-place transform
QUANTIZERS = {
    WeightSharingConfig: share_weights_,
    BinaryConfig: binarize_,
    FixedPointConfig: fixed_point_,
    ProductQuantConfig: product_quantize_,
    ResidualQuantConfig: residual_quantize_,
    LowRankConfig: low_rank_,
}


def quantize_(model: nn.Module, config: Any, calibration_batches: Iterable[Any] = ()) -> dict:
    """Quantize ``model`` in place with the method ``config``'s type names; returns the
    method's per-layer report. ``calibration_batches`` are used by ``UniformQuantConfig``
    (post-training activation ranges) and ignored otherwise."""
    if isinstance(config, UniformQuantConfig):
        return quantize_ptq_(model, config, calibration_batches)
    for kind, fn in QUANTIZERS.items():
        if isinstance(config, kind):
            return fn(model, config)
    names = ["UniformQuantConfig", *(k.__name__ for k in QUANTIZERS)]
    raise TypeError(f"config must be one of {names}, got {type(config).__name__}")


__all__ = ["QUANTIZERS", "quantize_"]
