"""Compression: pruning masks, k-means weight sharing, quantizers, Huffman coding and the .sqz file
format, as pure tensor functions under thin in-place model transforms ending in ``_``, and the
Deep Compression pipeline over them (Han et al., arXiv 1510.00149)."""
from squeezelab.compress.huffman import huffman_decode, huffman_encode
from squeezelab.compress.kmeans import fit_kmeans
from squeezelab.compress.masks import MaskHook, Masks
from squeezelab.compress.pipeline import (
    CompressConfig,
    CompressResult,
    compress,
    load_compressible,
    prune_and_retrain,
    save_compressible,
    share_and_finetune,
)
from squeezelab.compress.prune import PruneConfig, compute_masks, prune_
from squeezelab.compress.quantize import quantize_
from squeezelab.compress.schedules import GradualPruneHook, IterativePruneHook
from squeezelab.compress.size_report import format_size_report, size_report
from squeezelab.compress.sqz import SqzFormatError, load_compressed, read_sqz, save_compressed
from squeezelab.compress.weight_sharing import (
    WeightSharingConfig,
    materialize_,
    prepare_shared_,
    share_weights_,
    shared_layer_bits,
)

__all__ = [
    "CompressConfig", "CompressResult", "GradualPruneHook", "IterativePruneHook", "MaskHook",
    "Masks", "PruneConfig", "SqzFormatError", "WeightSharingConfig", "compress",
    "compute_masks", "fit_kmeans", "format_size_report", "huffman_decode", "huffman_encode",
    "load_compressed", "load_compressible", "materialize_", "prepare_shared_",
    "prune_", "prune_and_retrain", "quantize_", "read_sqz", "save_compressed",
    "save_compressible", "share_and_finetune", "share_weights_", "shared_layer_bits",
    "size_report",
]
