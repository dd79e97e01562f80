"""Product quantization of weight matrices (Jegou et al. 2011, "Product quantization for nearest
neighbor search", TPAMI; applied to CNN weights by Gong et al. 2014, "Compressing deep
convolutional networks using vector quantization", arXiv 1412.6115).

A layer's weight is viewed as the matrix W of shape (out, n), n = in * kh * kw for a conv. Each
row is cut into m = ceil(n / d) sub-vectors of dimension d (the last zero-padded), and every
sub-space s gets its own k-means codebook of K codewords; a row is stored as m codes of
ceil(log2 K) bits. Storage: out * m * ceil(log2 K) code bits + m * K * d * 32 codebook bits,
against out * n * 32 for fp32.

``kmeans_vectors`` is a small batched k-means over vectors (k-means++ seeding from a seeded
generator, Lloyd iterations with ``torch.cdist``), also used by residual quantization.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from squeezelab.compress.quantization.select import (
    LayerSelection,
    check_int,
    select_layers,
)

# --------------------------------------------------------------------------- k-means


def _kmeans_pp_init(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding, batched: x (B, N, D) -> centroids (B, k, D). The loop is over the k
    centroids; each step is vectorised over batches and points. Once every distinct point is a
    centroid (all distances 0) the rest are drawn uniformly, i.e. duplicates."""
    b, n, _ = x.shape
    rows = torch.arange(b, device=x.device)
    first = torch.randint(n, (b,), generator=gen, device=gen.device).to(x.device)
    centroids = [x[rows, first]]  # each (B, D)
    d2 = ((x - centroids[0][:, None]) ** 2).sum(-1)  # (B, N)
    for _ in range(1, k):
        weights = torch.where(d2.sum(1, keepdim=True) > 0, d2, torch.ones_like(d2))
        pick = torch.multinomial(weights.to(gen.device).float(), 1,
                                 generator=gen).to(x.device)[:, 0]
        c = x[rows, pick]
        centroids.append(c)
        d2 = torch.minimum(d2, ((x - c[:, None]) ** 2).sum(-1))
    return torch.stack(centroids, dim=1)


def kmeans_vectors(
    x: torch.Tensor, num_clusters: int, num_iters: int = 25, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of the rows of ``x``: (N, D) -> centroids (K, D), codes (N,) int64; or batched,
    (B, N, D) -> (B, K, D), (B, N), one independent k-means per batch entry.

    K = min(num_clusters, N). Seeded k-means++ then Lloyd's iterations until the assignment
    stops changing or ``num_iters`` is reached; an empty cluster keeps its previous centroid.
    Means are accumulated in float64, so a cluster of identical vectors has that vector as its
    centroid exactly (hence exact reconstruction when K >= the number of distinct vectors).
    Centroids are returned in ``x``'s dtype.
    """
    check_int("num_clusters", num_clusters, 1)
    check_int("num_iters", num_iters, 0)
    if x.dim() not in (2, 3) or x.shape[-2] == 0:
        raise ValueError(f"x must be (N, D) or (B, N, D) with N >= 1, got shape {tuple(x.shape)}")
    batched = x.dim() == 3
    xb = (x if batched else x[None]).detach().double()
    b, n, d = xb.shape
    k = min(num_clusters, n)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    centroids = _kmeans_pp_init(xb, k, gen)
    # Offsets so that one flat index_add_ updates all B codebooks at once.
    offsets = (torch.arange(b, device=xb.device) * k)[:, None]
    flat_x = xb.reshape(b * n, d)

    def assign(c: torch.Tensor) -> torch.Tensor:
        # The direct (non-matmul) distance is exact for identical vectors (distance 0).
        return torch.cdist(xb, c, compute_mode="donot_use_mm_for_euclid_dist").argmin(-1)

    codes = assign(centroids)
    for _ in range(num_iters):
        idx = (codes + offsets).reshape(-1)
        sums = torch.zeros(b * k, d, dtype=torch.float64, device=xb.device).index_add_(
            0, idx, flat_x)
        counts = torch.zeros(b * k, dtype=torch.float64, device=xb.device).index_add_(
            0, idx, torch.ones_like(idx, dtype=torch.float64)
        )
        means = (sums / counts.clamp(min=1)[:, None]).reshape(b, k, d)
        centroids = torch.where((counts > 0).reshape(b, k, 1), means, centroids)
        new_codes = assign(centroids)
        if torch.equal(new_codes, codes):
            break
        codes = new_codes
    centroids = centroids.to(x.dtype)
    return (centroids, codes) if batched else (centroids[0], codes[0])


def code_bits(num_codewords: int) -> int:
    """Bits of one index into a codebook of ``num_codewords`` (0 for a single codeword)."""
    return math.ceil(math.log2(num_codewords)) if num_codewords > 1 else 0


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, kh, kw) -> (out, in*kh*kw); a (out, in) Linear weight is returned as is."""
    return weight.reshape(weight.shape[0], -1)


def split_subvectors(matrix: torch.Tensor, subvector_dim: int) -> torch.Tensor:
    """(out, n) -> (out, m, d) with m = ceil(n / d), the last sub-vector zero-padded."""
    check_int("subvector_dim", subvector_dim, 1)
    out, n = matrix.shape
    m = -(-n // subvector_dim)
    padded = matrix.new_zeros(out, m * subvector_dim)
    padded[:, :n] = matrix
    return padded.reshape(out, m, subvector_dim)


# --------------------------------------------------------------------------- product quantization


@dataclass
class VectorQuantized:
    """Codes and fp32 codebooks of a vector-quantized weight of ``shape``; the codebooks are
    (groups, K, d): PQ's sub-spaces or RQ's stages."""

    codes: torch.Tensor
    codebooks: torch.Tensor
    shape: tuple[int, ...]

    @property
    def num_cols(self) -> int:
        return math.prod(self.shape[1:])

    def bits(self) -> dict[str, Any]:
        """Exact storage: code bits, codebook bits (fp32), fp32 bits of the original, the rate."""
        groups, k, d = self.codebooks.shape
        codes = self.codes.numel() * code_bits(k)
        books = groups * k * d * 32
        fp32 = self.shape[0] * self.num_cols * 32
        return {"code_bits": codes, "codebook_bits": books, "fp32_bits": fp32,
                "compression_rate": fp32 / (codes + books)}


class ProductQuantized(VectorQuantized):
    """Codes (out, m) and codebooks (m, K, d) of a product-quantized weight of ``shape``."""


def product_quantize(
    weight: torch.Tensor, subvector_dim: int, num_clusters: int, num_iters: int = 25, seed: int = 0
) -> ProductQuantized:
    """Product-quantize ``weight`` (a conv or Linear weight; see the module docstring)."""
    sub = split_subvectors(as_matrix(weight.detach()), subvector_dim)  # (out, m, d)
    # one k-means per sub-space
    centroids, codes = kmeans_vectors(sub.transpose(0, 1), num_clusters, num_iters, seed)
    return ProductQuantized(codes=codes.transpose(0, 1).contiguous(), codebooks=centroids,
                            shape=tuple(weight.shape))


def product_reconstruct(pq: ProductQuantized) -> torch.Tensor:
    """The weight the codes stand for: codebooks[s, codes[row, s]] per row and sub-space."""
    m = pq.codebooks.shape[0]
    sub = pq.codebooks[torch.arange(m, device=pq.codes.device)[None, :], pq.codes]  # (out, m, d)
    return sub.reshape(pq.shape[0], -1)[:, : pq.num_cols].reshape(pq.shape)


# --------------------------------------------------------------------------- transform


@dataclass(kw_only=True)
class ProductQuantConfig(LayerSelection):
    """``subvector_dim`` d, ``num_clusters`` K per sub-space, k-means ``num_iters`` and ``seed``."""

    subvector_dim: int = 4
    num_clusters: int = 256
    num_iters: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("subvector_dim", self.subvector_dim, 1)
        check_int("num_clusters", self.num_clusters, 1)
        check_int("num_iters", self.num_iters, 0)
        check_int("seed", self.seed, 0)


def summarize_bits(layers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Totals over per-layer bit reports, with the overall compression rate of those weights."""
    totals = {key: sum(r[key] for r in layers.values())
              for key in ("code_bits", "codebook_bits", "fp32_bits")}
    totals["compression_rate"] = (totals["fp32_bits"]
                                  / (totals["code_bits"] + totals["codebook_bits"]))
    return {"layers": layers, **totals}


@torch.no_grad()
def product_quantize_(model: nn.Module, config: ProductQuantConfig) -> dict[str, Any]:
    """Replace the weights of the selected layers by their product-quantized reconstruction, in
    place (module types and state-dict keys unchanged; biases stay fp32 and are not counted).

    Returns ``{"layers": {name: bits + relative_error}, "code_bits", "codebook_bits",
    "fp32_bits", "compression_rate"}`` where relative_error = ||W - W_hat|| / ||W||.
    """
    layers = {}
    for name, module in select_layers(model, config):
        w = module.weight
        pq = product_quantize(w, config.subvector_dim, config.num_clusters, config.num_iters,
                              config.seed)
        w_hat = product_reconstruct(pq)
        err = float((w - w_hat).norm() / w.norm().clamp(min=1e-12))
        w.copy_(w_hat)
        layers[name] = {**pq.bits(), "num_clusters": pq.codebooks.shape[1], "relative_error": err}
    return summarize_bits(layers)


__all__ = [
    "ProductQuantConfig", "ProductQuantized", "VectorQuantized", "as_matrix", "code_bits",
    "kmeans_vectors", "product_quantize", "product_quantize_", "product_reconstruct",
    "split_subvectors", "summarize_bits",
]
