"""The one table of quantizers: ``quantize_(model, config)`` dispatches on the config's type,
and the ``quantize`` command takes its ``--method`` names and builds its configs from here.

K-means weight sharing (Deep Compression, arXiv 1510.00149), uniform affine int8 (arXiv
1712.05877), BinaryConnect / XNOR (arXiv 1511.00363, 1603.05279), fixed point (arXiv
1412.7024), product and residual quantization (arXiv 1412.6115) and low-rank factorisation
(arXiv 1404.0736): see ``weight_sharing.py`` and the other modules of this folder.

A new quantizer is one registration here: a builder of its config from the ``quantize``
command's options, decorated with ``@register_quantizer(name, ConfigClass, transform)``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

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
from squeezelab.config import ConfigBase, ConfigError


@dataclass
class QuantizeOptions:
    """The ``quantize`` command's method options in the library's words; each method's
    builder reads the ones it uses. ``bits``: kmeans bits for conv and linear, fixed-point
    total bits (None: the method's default); ``layer_bits``: kmeans bits per layer type or
    glob; ``energy``: lowrank energy kept; ``num_clusters`` / ``subvector_dim``: pq and rq."""

    bits: int | None = None
    layer_bits: dict[str, int] = field(default_factory=dict)
    energy: float = 0.9
    num_clusters: int = 256
    subvector_dim: int = 4


@dataclass(frozen=True)
class Quantizer:
    """One registered method: its ``--method`` ``name``, its config class, the in-place
    ``transform(model, config)`` (``transform(model, config, calibration_batches)`` when
    ``calibrated``: post-training activation ranges), and ``build``, which makes its config
    from ``QuantizeOptions``."""

    name: str
    config_class: type[ConfigBase]
    transform: Callable[..., Any]
    build: Callable[[QuantizeOptions], ConfigBase]
    help: str
    calibrated: bool = False


#: ``--method`` name -> Quantizer, in registration order
QUANTIZERS: dict[str, Quantizer] = {}


def register_quantizer(name: str, config_class: type[ConfigBase], transform: Callable[..., Any],
                       *, help: str, calibrated: bool = False
                       ) -> Callable[[Callable[[QuantizeOptions], ConfigBase]],
                                     Callable[[QuantizeOptions], ConfigBase]]:
    """Decorator over a builder ``options -> config`` that registers the method ``name``.
    Several names may share one config class and transform (binary and xnor)."""
    def register(build: Callable[[QuantizeOptions], ConfigBase]):
        if name in QUANTIZERS:
            raise ValueError(f"quantizer {name!r} is already registered")
        for other in QUANTIZERS.values():
            if other.config_class is config_class and other.transform is not transform:
                raise ValueError(f"{config_class.__name__} already belongs to quantizer "
                                 f"{other.name!r} with another transform")
        QUANTIZERS[name] = Quantizer(name, config_class, transform, build, help, calibrated)
        return build
    return register


def quantizer_names() -> list[str]:
    """Every registered ``--method`` name, in registration order."""
    return list(QUANTIZERS)


def get_quantizer(name: str, what: str = "method") -> Quantizer:
    """The quantizer registered as ``name``; ``what`` names the option in the error."""
    if name not in QUANTIZERS:
        raise ConfigError(f"{what} must be one of {', '.join(QUANTIZERS)}, got {name!r}")
    return QUANTIZERS[name]


def quantizer_config(name: str, options: QuantizeOptions | None = None,
                     what: str = "method") -> ConfigBase:
    """The config of method ``name`` built from the ``quantize`` command's ``options``."""
    return get_quantizer(name, what).build(options or QuantizeOptions())


def quantize_(model: nn.Module, config: Any, calibration_batches: Iterable[Any] = ()) -> dict:
    """Quantize ``model`` in place with the method ``config``'s type names; returns the
    method's per-layer report. ``calibration_batches`` are used by calibrated methods
    (``UniformQuantConfig``: post-training activation ranges) and ignored otherwise."""
    by_class = {q.config_class: q for q in QUANTIZERS.values()}
    for kind in type(config).__mro__:  # the config's own class first, then its bases
        if kind in by_class:
            q = by_class[kind]
            if q.calibrated:
                return q.transform(model, config, calibration_batches)
            return q.transform(model, config)
    names = sorted({q.config_class.__name__ for q in QUANTIZERS.values()})
    raise TypeError(f"config must be one of {names}, got {type(config).__name__}")


# --------------------------------------------------------------------------------------------
# the registrations: one per method
# --------------------------------------------------------------------------------------------
@register_quantizer("kmeans", WeightSharingConfig, share_weights_,
                    help="k-means weight sharing (Deep Compression); writes a .sqz")
def _kmeans(o: QuantizeOptions) -> WeightSharingConfig:
    bits = dict(o.layer_bits)
    if o.bits is not None:
        bits = {"conv": o.bits, "linear": o.bits, **bits}
    return WeightSharingConfig(bits=bits) if bits else WeightSharingConfig()


@register_quantizer("int8", UniformQuantConfig, quantize_ptq_, calibrated=True,
                    help="uniform affine int8 weights and activations (post-training)")
def _int8(o: QuantizeOptions) -> UniformQuantConfig:
    return UniformQuantConfig(num_bits=8)


@register_quantizer("binary", BinaryConfig, binarize_, help="BinaryConnect: sign(w)")
def _binary(o: QuantizeOptions) -> BinaryConfig:
    return BinaryConfig(method="binaryconnect")


@register_quantizer("xnor", BinaryConfig, binarize_, help="XNOR weights: alpha * sign(w)")
def _xnor(o: QuantizeOptions) -> BinaryConfig:
    return BinaryConfig(method="xnor")


@register_quantizer("fixed", FixedPointConfig, fixed_point_,
                    help="dynamic fixed point of --bits total bits (default 8)")
def _fixed(o: QuantizeOptions) -> FixedPointConfig:
    return FixedPointConfig(total_bits=o.bits or 8)


@register_quantizer("pq", ProductQuantConfig, product_quantize_, help="product quantization")
def _pq(o: QuantizeOptions) -> ProductQuantConfig:
    return ProductQuantConfig(subvector_dim=o.subvector_dim, num_clusters=o.num_clusters)


@register_quantizer("rq", ResidualQuantConfig, residual_quantize_,
                    help="residual quantization")
def _rq(o: QuantizeOptions) -> ResidualQuantConfig:
    return ResidualQuantConfig(vector_dim=o.subvector_dim, num_clusters=o.num_clusters)


@register_quantizer("lowrank", LowRankConfig, low_rank_,
                    help="truncated-SVD factorisation keeping --energy")
def _lowrank(o: QuantizeOptions) -> LowRankConfig:
    return LowRankConfig(energy=o.energy)


__all__ = ["QUANTIZERS", "QuantizeOptions", "Quantizer", "get_quantizer", "quantize_",
           "quantizer_config", "quantizer_names", "register_quantizer"]
