"""Compression: pure tensor functions under thin in-place model transforms ending in ``_``.

    pruning/        magnitude pruning, masks, schedules, sensitivity, channel removal
    quantization/   k-means weight sharing and every other quantizer, one registry
    coding/         Huffman and sparse-position coding
    format/         the .sqz file, its size report, checkpoints of compressed models
    fold.py         BatchNorm folding
    winograd.py     Winograd F(2x2,3x3) / F(4x4,3x3) convolution: fewer multiplies, same outputs

Nothing here trains a model: the Deep Compression pipeline, which retrains between steps, is a
workflow (``squeezelab.workflows.deep_compression``). Training-time methods plug in as hooks
(``squeezelab.hooks``), the one interface both floors share.
"""
from squeezelab.compress.coding import huffman_decode, huffman_encode
from squeezelab.compress.format import (
    SqzFormatError,
    format_size_report,
    load_compressed,
    load_compressible,
    read_sqz,
    save_compressed,
    save_compressible,
    size_report,
)
from squeezelab.compress.pruning import (
    GradualPruneHook,
    IterativePruneHook,
    MaskHook,
    Masks,
    PruneConfig,
    compute_masks,
    prune_,
)
from squeezelab.compress.quantization.kmeans import fit_kmeans
from squeezelab.compress.quantization.registry import quantize_
from squeezelab.compress.quantization.weight_sharing import (
    WeightSharingConfig,
    materialize_,
    prepare_shared_,
    share_weights_,
    shared_layer_bits,
)

__all__ = [
    "GradualPruneHook", "IterativePruneHook", "MaskHook", "Masks", "PruneConfig",
    "SqzFormatError", "WeightSharingConfig", "compute_masks", "fit_kmeans", "format_size_report",
    "huffman_decode", "huffman_encode", "load_compressed", "load_compressible", "materialize_",
    "prepare_shared_", "prune_", "quantize_", "read_sqz", "save_compressed", "save_compressible",
    "shared_layer_bits", "share_weights_", "size_report",
]
