"""Quantizers other than k-means weight sharing, and low-rank factorisation.

Each method is a set of pure tensor functions under a thin in-place model transform that takes a
validated dataclass config (layers chosen by globs over module names, see ``select``):

* ``uniform`` (arithmetic, observers, config), ``uniform_ptq`` (integer layers, post-training)
  and ``uniform_qat`` (quantization-aware): affine int8 (Jacob et al. 2018, arXiv 1712.05877);
* ``binary``: BinaryConnect (arXiv 1511.00363), XNOR weights and XNOR-Net (arXiv 1603.05279);
  ``xnor_bits``: XNOR-Net layers that compute on packed sign bits (XOR + popcount);
* ``fixed_point``: fixed and dynamic fixed point (arXiv 1412.7024, Ristretto arXiv 1605.06402);
* ``product`` / ``residual``: product and residual vector quantization (Gong et al. 2014,
  arXiv 1412.6115);
* ``lowrank``: truncated-SVD factorisation of conv and linear layers (Denton et al. 2014,
  arXiv 1404.0736).

Quantization-aware layers keep the real-valued weights as Parameters and quantize in the forward
with a straight-through estimator (``ste``), so an ordinary optimizer trains them.
"""
from squeezelab.compress.quantization.binary import (
    BinaryClipHook,
    BinaryConfig,
    BinaryConv2d,
    BinaryLinear,
    binarize_,
    binarize_weight,
    binary_input_scale,
    clip_binary_weights_,
    xnor_alpha,
    xnor_conv2d,
    xnor_linear,
)
from squeezelab.compress.quantization.fixed_point import (
    FixedPointConfig,
    FixedPointConv2d,
    FixedPointLinear,
    choose_frac_bits,
    fixed_point_,
    fixed_point_codes,
    to_fixed_point,
)
from squeezelab.compress.quantization.lowrank import (
    LowRankConfig,
    factorize_layer,
    low_rank_,
    low_rank_factors,
    rank_for_energy,
)
from squeezelab.compress.quantization.product import (
    ProductQuantConfig,
    ProductQuantized,
    kmeans_vectors,
    product_quantize,
    product_quantize_,
    product_reconstruct,
)
from squeezelab.compress.quantization.residual import (
    ResidualQuantConfig,
    ResidualQuantized,
    residual_quantize,
    residual_quantize_,
    residual_reconstruct,
)
from squeezelab.compress.quantization.select import LayerSelection, select_layers
from squeezelab.compress.quantization.ste import binary_sign, sign_ste
from squeezelab.compress.quantization.uniform import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    UniformQuantConfig,
    choose_qparams,
    dequantize_affine,
    fake_quantize,
    quantize_affine,
)
from squeezelab.compress.quantization.uniform_ptq import (
    QuantizedConv2d,
    QuantizedLinear,
    quantize_ptq_,
)
from squeezelab.compress.quantization.uniform_qat import (
    QATConv2d,
    QATLinear,
    convert_qat_,
    prepare_qat_,
)
from squeezelab.compress.quantization.xnor_bits import (
    PackedXnorConv2d,
    PackedXnorLinear,
    pack_xnor_,
    xnor_popcount_dot,
)

__all__ = [
    # uniform affine
    "UniformQuantConfig", "choose_qparams", "quantize_affine", "dequantize_affine", "fake_quantize",
    "MinMaxObserver", "MovingAverageMinMaxObserver", "QuantizedConv2d", "QuantizedLinear",
    "QATConv2d", "QATLinear", "quantize_ptq_", "prepare_qat_", "convert_qat_",
    # binary
    "BinaryConfig", "BinaryConv2d", "BinaryLinear", "BinaryClipHook", "binarize_",
    "binarize_weight", "binary_input_scale", "binary_sign", "clip_binary_weights_", "sign_ste",
    "xnor_alpha", "xnor_conv2d", "xnor_linear", "PackedXnorConv2d", "PackedXnorLinear",
    "pack_xnor_", "xnor_popcount_dot",
    # fixed point
    "FixedPointConfig", "FixedPointConv2d", "FixedPointLinear", "choose_frac_bits", "fixed_point_",
    "fixed_point_codes", "to_fixed_point",
    # vector quantization
    "ProductQuantConfig", "ProductQuantized", "kmeans_vectors", "product_quantize",
    "product_quantize_", "product_reconstruct", "ResidualQuantConfig", "ResidualQuantized",
    "residual_quantize", "residual_quantize_", "residual_reconstruct",
    # low rank
    "LowRankConfig", "factorize_layer", "low_rank_", "low_rank_factors", "rank_for_energy",
    # layer selection
    "LayerSelection", "select_layers",
]
