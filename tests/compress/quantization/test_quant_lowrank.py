"""Low-rank factorisation by truncated SVD (Denton et al. 2014, arXiv 1404.0736): the energy
rule on known singular values, exact parameter counts, full rank reproducing the layer."""
import pytest
import torch
import torch.nn as nn

from squeezelab import create_model
from squeezelab.compress.quantization.lowrank import (
    LowRankConfig,
    factorize_layer,
    low_rank_,
    low_rank_factors,
    rank_for_energy,
)


def matrix_with_singular_values(values, rows, cols, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, len(values), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, len(values), generator=g, dtype=torch.float64))
    return (u * torch.tensor(values, dtype=torch.float64)) @ v.T


@pytest.mark.parametrize(
    "energy, rank", [(0.5, 1), (16 / 30, 1), (0.8, 2), (0.9, 3), (0.97, 4), (1.0, 4)])
def test_rank_for_energy_on_known_singular_values(energy, rank):
    # squares 16, 9, 4, 1 of 30: cumulative 0.533, 0.833, 0.967, 1
    assert rank_for_energy(torch.tensor([4.0, 3.0, 2.0, 1.0]), energy) == rank


def test_rank_for_energy_rejects_bad_energy():
    with pytest.raises(ValueError, match="energy must be in \\(0, 1\\], got 1.5"):
        rank_for_energy(torch.ones(3), 1.5)


def test_energy_picks_the_rank_inside_a_model():
    w = matrix_with_singular_values([4.0, 3.0, 2.0, 1.0], 24, 40).float()
    model = nn.Sequential(nn.Linear(40, 24), nn.ReLU(), nn.Linear(24, 2))
    with torch.no_grad():
        model[0].weight.copy_(w)
    report = low_rank_(model, LowRankConfig(energy=0.9, layers=["0"]))
    assert report["0"]["rank"] == 3 and report["0"]["full_rank"] == 24
    assert report["0"]["energy_kept"] == pytest.approx(29 / 30, rel=1e-5)
    assert report["0"]["params_before"] == 40 * 24 + 24
    assert report["0"]["params_after"] == 3 * 40 + 24 * 3 + 24
    first, second = model[0]
    assert (first.in_features, first.out_features, first.bias) == (40, 3, None)
    assert (second.in_features, second.out_features) == (3, 24)
    best = low_rank_factors(w, 3)
    assert torch.allclose(second.weight @ first.weight, best[0] @ best[1], atol=1e-5)
    # the rank-3 product is the truncated SVD: the error is the dropped singular value
    error = torch.linalg.matrix_norm(second.weight @ first.weight - w, ord=2).item()
    assert error == pytest.approx(1.0, rel=1e-4)


def test_full_rank_reproduces_conv_and_linear_outputs():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, dilation=1)
    x = torch.randn(2, 3, 9, 9)
    fact = factorize_layer(conv, 5)
    assert fact[0].weight.shape == (5, 3, 3, 3) and fact[0].stride == (2, 2)
    assert fact[0].bias is None
    assert fact[1].weight.shape == (5, 5, 1, 1)
    assert torch.allclose(fact(x), conv(x), atol=1e-5)
    lin = nn.Linear(7, 4)
    v = torch.randn(3, 7)
    assert torch.allclose(factorize_layer(lin, 4)(v), lin(v), atol=1e-5)
    with pytest.raises(ValueError, match="rank must be an integer in \\[1, 4\\], got 5"):
        factorize_layer(lin, 5)


def test_parameter_counts_and_skips():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(8, 16, 3, padding=1),  # n = 72: rank 2 -> 2*72 + 16*2 + 16 = 192 (from 1168)
        nn.Conv2d(16, 16, 3, padding=1, groups=4),  # grouped: skipped
        nn.Conv2d(16, 2, 1),  # out = 2: rank 2 saves nothing
    )
    report = low_rank_(model, LowRankConfig(energy=None, rank=2))
    assert report["0"]["params_before"] == 16 * 72 + 16 and report["0"]["params_after"] == 192
    assert report["0"]["skipped"] is None and isinstance(model[0], nn.Sequential)
    assert report["1"]["skipped"] == "grouped conv (groups=4)" and isinstance(model[1], nn.Conv2d)
    assert report["2"]["skipped"] == "rank 2 saves no parameters (36 >= 32)"
    assert sum(p.numel() for p in model[0].parameters()) == 192


def test_output_shapes_unchanged_on_a_tiny_squeezenet():
    torch.manual_seed(0)
    model = create_model("squeezenet_cifar", fire_config=[(8, 16, 16)] * 8, stem_channels=16).eval()
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    params_before = sum(p.numel() for p in model.parameters())
    report = low_rank_(model, LowRankConfig(energy=None, rank=6))
    done = [n for n, r in report.items() if r["skipped"] is None]
    # rank 6 shrinks the stem (16 x 27: 258 < 432) and the 3x3 expands (16 x 72: 528 < 1152),
    # not the 1x1 convs (8 x 16 or 16 x 8: 144 >= 128)
    assert "features.0" in done and "features.4.expand3x3" in done
    assert report["features.4.squeeze"]["skipped"] and report["features.4.expand1x1"]["skipped"]
    saved = sum(r["params_before"] - r["params_after"] for r in report.values())
    assert saved == params_before - sum(p.numel() for p in model.parameters()) > 0
    assert isinstance(model.features[4].expand3x3, nn.Sequential)
    assert model(x).shape == ref.shape


def test_config_errors():
    with pytest.raises(ValueError, match="set exactly one of energy and rank"):
        LowRankConfig(energy=0.9, rank=4)
    with pytest.raises(ValueError, match="set exactly one of energy and rank"):
        LowRankConfig(energy=None)
    with pytest.raises(ValueError, match="energy must be in \\(0, 1\\], got 0"):
        LowRankConfig(energy=0)
