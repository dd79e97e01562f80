"""Residual quantization of weight matrices (Chen et al. 2010, "Approximate nearest neighbor
search by residual vector quantization"; applied to CNN weights by Gong et al. 2014,
"Compressing deep convolutional networks using vector quantization", arXiv 1412.6115).

The vectors (the rows of the (out, in*kh*kw) weight matrix, or, with ``vector_dim`` d, the
d-dimensional pieces of those rows, zero-padded) are quantized by k-means; the residuals (vector
minus its codeword) are quantized again by a second k-means, and so on for ``num_stages``
stages. A vector is reconstructed as the sum of its selected codeword of every stage. Unlike
product quantization, one codebook per stage serves every vector. Storage: num_vectors *
num_stages * ceil(log2 K) code bits + num_stages * K * D * 32 codebook bits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from squeezelab.compress.quantization.product import (
    VectorQuantized,
    as_matrix,
    kmeans_vectors,
    split_subvectors,
    summarize_bits,
)
from squeezelab.compress.quantization.select import (
    LayerSelection,
    check_int,
    select_layers,
)


class ResidualQuantized(VectorQuantized):
    """Codes (num_stages, num_vectors) and codebooks (num_stages, K, D) of a weight of ``shape``."""


def _vectors(weight: torch.Tensor, vector_dim: int | None) -> torch.Tensor:
    matrix = as_matrix(weight.detach())
    if vector_dim is None:
        return matrix  # (out, n): one vector per row
    return split_subvectors(matrix, vector_dim).reshape(-1, vector_dim)  # (out * m, d)


def residual_quantize(
    weight: torch.Tensor,
    num_clusters: int,
    num_stages: int,
    vector_dim: int | None = None,
    num_iters: int = 25,
    seed: int = 0,
) -> ResidualQuantized:
    """Residual-quantize ``weight`` in ``num_stages`` k-means stages of ``num_clusters`` each
    (stage s uses seed ``seed + s``). All stages share K = min(num_clusters, num_vectors)."""
    check_int("num_stages", num_stages, 1)
    if vector_dim is not None:
        check_int("vector_dim", vector_dim, 1)
    residual = _vectors(weight, vector_dim)
    books, codes = [], []
    for stage in range(num_stages):
        centroids, idx = kmeans_vectors(residual, num_clusters, num_iters, seed + stage)
        books.append(centroids)
        codes.append(idx)
        residual = residual - centroids[idx]
    return ResidualQuantized(codes=torch.stack(codes), codebooks=torch.stack(books),
                             shape=tuple(weight.shape))


def residual_reconstruct(rq: ResidualQuantized, num_stages: int | None = None) -> torch.Tensor:
    """Sum over the first ``num_stages`` stages (default all) of each vector's codeword."""
    total = rq.codebooks.shape[0]
    stages = total if num_stages is None else num_stages
    check_int("num_stages", stages, 0, total)
    stage_idx = torch.arange(stages, device=rq.codes.device)[:, None]
    # (stages, V, D) -> (V, D); zero stages sum to zeros.
    vectors = rq.codebooks[stage_idx, rq.codes[:stages]].sum(0)
    return vectors.reshape(rq.shape[0], -1)[:, : rq.num_cols].reshape(rq.shape)


@dataclass(kw_only=True)
class ResidualQuantConfig(LayerSelection):
    """``num_clusters`` K per stage, ``num_stages``, ``vector_dim`` (None: whole rows), k-means
    ``num_iters`` and ``seed``."""

    num_clusters: int = 256
    num_stages: int = 2
    vector_dim: int | None = 4
    num_iters: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("num_clusters", self.num_clusters, 1)
        check_int("num_stages", self.num_stages, 1)
        if self.vector_dim is not None:
            check_int("vector_dim", self.vector_dim, 1)
        check_int("num_iters", self.num_iters, 0)
        check_int("seed", self.seed, 0)


@torch.no_grad()
def residual_quantize_(model: nn.Module, config: ResidualQuantConfig) -> dict[str, Any]:
    """Replace the weights of the selected layers by their residual-quantized reconstruction in
    place (module types and state-dict keys unchanged; biases stay fp32 and are not counted).
    Returns the same structure as ``product_quantize_``."""
    layers = {}
    for name, module in select_layers(model, config):
        w = module.weight
        rq = residual_quantize(
            w, config.num_clusters, config.num_stages, config.vector_dim, config.num_iters,
            config.seed,
        )
        w_hat = residual_reconstruct(rq)
        err = float((w - w_hat).norm() / w.norm().clamp(min=1e-12))
        w.copy_(w_hat)
        layers[name] = {**rq.bits(), "num_clusters": rq.codebooks.shape[1], "relative_error": err}
    return summarize_bits(layers)


__all__ = [
    "ResidualQuantConfig", "ResidualQuantized", "residual_quantize", "residual_quantize_",
    "residual_reconstruct",
]
