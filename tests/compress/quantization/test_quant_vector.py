"""Product and residual quantization (Gong et al. 2014, arXiv 1412.6115) and the batched k-means
under them: exact reconstructions, monotone residual error, code shapes and bit accounting."""
import pytest
import torch
import torch.nn as nn

from squeezelab.compress.quantization.product import (
    ProductQuantConfig,
    code_bits,
    kmeans_vectors,
    product_quantize,
    product_quantize_,
    product_reconstruct,
    split_subvectors,
)
from squeezelab.compress.quantization.residual import (
    ResidualQuantConfig,
    residual_quantize,
    residual_quantize_,
    residual_reconstruct,
)


def test_kmeans_recovers_distinct_vectors_exactly():
    torch.manual_seed(0)
    distinct = torch.randn(3, 5)
    x = distinct[torch.tensor([0, 1, 2, 1, 0, 2, 2, 0, 1, 1])]
    for k in (3, 5, 50):  # K >= distinct vectors (K is capped at N = 10)
        centroids, codes = kmeans_vectors(x, k, seed=k)
        assert codes.shape == (10,) and centroids.shape == (min(k, 10), 5)
        assert torch.equal(centroids[codes], x)


def test_kmeans_is_seeded_batched_and_lloyd_converges():
    torch.manual_seed(1)
    x = torch.randn(2, 40, 3)
    c1, k1 = kmeans_vectors(x, 4, seed=7)
    c2, k2 = kmeans_vectors(x, 4, seed=7)
    assert torch.equal(c1, c2) and torch.equal(k1, k2)
    assert c1.shape == (2, 4, 3) and k1.shape == (2, 40)
    for b in range(2):
        # at a Lloyd fixed point every code is its nearest centroid and every centroid its mean
        d = torch.cdist(x[b].double(), c1[b].double())
        assert torch.equal(d.argmin(1), k1[b])
        for j in range(4):
            members = x[b][k1[b] == j]
            if len(members):
                assert torch.allclose(c1[b, j], members.mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="num_clusters must be an integer in >= 1, got 0"):
        kmeans_vectors(x, 0)
    with pytest.raises(ValueError, match="x must be \\(N, D\\) or \\(B, N, D\\)"):
        kmeans_vectors(torch.randn(5), 2)


def test_split_subvectors_pads_the_last_piece():
    m = torch.arange(10.0).reshape(2, 5)
    sub = split_subvectors(m, 2)
    assert sub.shape == (2, 3, 2)
    assert sub[0].tolist() == [[0, 1], [2, 3], [4, 0]]


def test_product_quantization_shapes_bits_and_exact_reconstruction():
    torch.manual_seed(0)
    w = torch.randn(6, 2, 3, 3)  # (out, n) = (6, 18); d = 4 -> m = 5 sub-spaces (last padded)
    pq = product_quantize(w, subvector_dim=4, num_clusters=6)
    assert pq.codes.shape == (6, 5) and pq.codebooks.shape == (5, 6, 4)
    # a sub-space has at most 6 distinct sub-vectors, so K = 6 reconstructs exactly
    assert torch.equal(product_reconstruct(pq), w)
    pq4 = product_quantize(w, subvector_dim=4, num_clusters=4)
    assert pq4.bits() == {
        "code_bits": 6 * 5 * 2,
        "codebook_bits": 5 * 4 * 4 * 32,
        "fp32_bits": 6 * 18 * 32,
        "compression_rate": (6 * 18 * 32) / (6 * 5 * 2 + 5 * 4 * 4 * 32),
    }
    assert not torch.equal(product_reconstruct(pq4), w)
    assert code_bits(1) == 0 and code_bits(2) == 1 and code_bits(256) == 8 and code_bits(257) == 9


def test_product_quantize_transform_on_a_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    original = model[0].weight.detach().clone()
    result = product_quantize_(
        model, ProductQuantConfig(subvector_dim=4, num_clusters=8, layers=["0"]))
    layer = result["layers"]["0"]
    # 64 rows x 4 sub-spaces x 3 bits; 4 codebooks of 8 x 4 floats
    assert layer["code_bits"] == 64 * 4 * 3 and layer["codebook_bits"] == 4 * 8 * 4 * 32
    assert result["compression_rate"] == pytest.approx(64 * 16 * 32 / (768 + 4096))
    expected = product_reconstruct(product_quantize(original, 4, 8))
    assert torch.equal(model[0].weight, expected)
    assert 0 < layer["relative_error"] < 1
    assert type(model[0]) is nn.Linear  # keys and types unchanged


def test_residual_error_does_not_increase_with_stages():
    torch.manual_seed(0)
    w = torch.randn(32, 4, 3, 3)
    rq = residual_quantize(w, num_clusters=8, num_stages=4, vector_dim=6)
    assert rq.codes.shape == (4, 32 * 6) and rq.codebooks.shape == (4, 8, 6)
    errors = [(residual_reconstruct(rq, s) - w).norm().item() for s in range(5)]
    assert errors[0] == pytest.approx(w.norm().item())
    assert all(b <= a * (1 + 1e-6) for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 0.8 * errors[0]
    assert torch.equal(residual_reconstruct(rq), residual_reconstruct(rq, 4))
    with pytest.raises(ValueError, match="num_stages must be an integer in \\[0, 4\\], got 5"):
        residual_reconstruct(rq, 5)


def test_residual_exact_and_bits():
    torch.manual_seed(0)
    rows = torch.randn(3, 8)
    w = rows[torch.tensor([0, 1, 2, 0, 1])]  # 5 rows, 3 distinct; whole-row vectors
    rq = residual_quantize(w, num_clusters=3, num_stages=2, vector_dim=None)
    assert rq.codes.shape == (2, 5) and rq.codebooks.shape == (2, 3, 8)
    assert torch.allclose(residual_reconstruct(rq, 1), w, atol=0)
    assert torch.equal(residual_reconstruct(rq), w)
    assert rq.bits() == {"code_bits": 2 * 5 * 2, "codebook_bits": 2 * 3 * 8 * 32,
                         "fp32_bits": 5 * 8 * 32,
                         "compression_rate": (5 * 8 * 32) / (20 + 2 * 3 * 8 * 32)}


def test_residual_transform_and_config_errors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    result = residual_quantize_(
        model, ResidualQuantConfig(num_clusters=4, num_stages=2, vector_dim=2))
    assert set(result["layers"]) == {"0", "2"}
    assert result["code_bits"] == sum(r["code_bits"] for r in result["layers"].values())
    # conv 0: 8 rows x 9 pieces of 2 (18 columns) x 2 stages x 2 bits
    assert result["layers"]["0"]["code_bits"] == 8 * 9 * 2 * 2
    with pytest.raises(ValueError, match="num_stages must be an integer in >= 1, got 0"):
        ResidualQuantConfig(num_stages=0)
    with pytest.raises(ValueError, match="subvector_dim must be an integer in >= 1"):
        ProductQuantConfig(subvector_dim=0)
    with pytest.raises(ValueError, match=r"ProductQuantConfig: unknown key 'num_cluster' "
                                         r"\(did you mean num_clusters"):
        ProductQuantConfig.from_dict({"num_cluster": 4})
