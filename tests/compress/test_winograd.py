"""Winograd F(2x2,3x3) and F(4x4,3x3) (arXiv 1509.09308): the matrices derived from their
interpolation points, exact small convolutions in rational and float64 arithmetic, agreement
with F.conv2d in fp32 over many shapes, the layer and the model transform, the multiplication
counts, and the layers it refuses."""
import random
from fractions import Fraction

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab import create_model
from squeezelab.compress.winograd import (
    POINTS,
    WINOGRAD_MATRICES,
    WinogradConv2d,
    toom_cook_matrices,
    transform_filter,
    winograd_,
    winograd_conv2d,
    winograd_layer_multiplies,
    winograd_matrices,
    winograd_multiply_table,
)


def as_fractions(matrix):
    return [[Fraction(v) for v in row] for row in matrix]


def matmul(a, b):
    return [[sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))]
            for i in range(len(a))]


def transpose(a):
    return [list(col) for col in zip(*a)]


def correlate_1d(d, g):
    return [sum(g[j] * d[i + j] for j in range(len(g))) for i in range(len(d) - len(g) + 1)]


def correlate_2d(d, g):
    n, r = len(d), len(g)
    return [[sum(g[u][v] * d[i + u][j + v] for u in range(r) for v in range(r))
             for j in range(n - r + 1)] for i in range(n - r + 1)]


# ----------------------------------------------------------------------------- the matrices


def test_toom_cook_at_0_pm1_pm2_inf_gives_the_papers_f4x4_matrices_exactly():
    at, g, bt = toom_cook_matrices(4, 3, POINTS[4])
    paper = WINOGRAD_MATRICES[4]
    assert at == as_fractions(paper["AT"])
    assert g == as_fractions(paper["G"])
    assert bt == as_fractions(paper["BT"])


def test_toom_cook_at_0_pm1_inf_matches_the_papers_f2x2_term_by_term():
    # The paper prints F(2,3) with some rows' signs flipped (G row 0 and B^T row 0; A^T's last
    # column and B^T's last row); each transform-domain position's rank-one term
    # A^T[:, i] x G[i, :] x B^T[i, :] is the same.
    at, g, bt = toom_cook_matrices(2, 3, POINTS[2])
    paper = {k: as_fractions(v) for k, v in WINOGRAD_MATRICES[2].items()}

    def term(at_, g_, bt_, i):
        return [[[at_[k][i] * g_[i][j] * bt_[i][c] for c in range(4)] for j in range(3)]
                for k in range(2)]

    for i in range(4):
        assert term(at, g, bt, i) == term(paper["AT"], paper["G"], paper["BT"], i)


@pytest.mark.parametrize("tile", [2, 4])
def test_matrices_compute_1d_and_2d_correlations_exactly_in_rationals(tile):
    rng = random.Random(tile)
    mats = {k: as_fractions(v) for k, v in WINOGRAD_MATRICES[tile].items()}
    at, g_mat, bt = mats["AT"], mats["G"], mats["BT"]
    a = tile + 2
    for _ in range(5):
        d = [Fraction(rng.randint(-9, 9)) for _ in range(a)]
        g = [Fraction(rng.randint(-9, 9)) for _ in range(3)]
        gg = [sum(g_mat[i][k] * g[k] for k in range(3)) for i in range(a)]
        dd = [sum(bt[i][k] * d[k] for k in range(a)) for i in range(a)]
        y = [sum(at[j][i] * gg[i] * dd[i] for i in range(a)) for j in range(tile)]
        assert y == correlate_1d(d, g)
        d2 = [[Fraction(rng.randint(-9, 9)) for _ in range(a)] for _ in range(a)]
        g2 = [[Fraction(rng.randint(-9, 9)) for _ in range(3)] for _ in range(3)]
        u = matmul(matmul(g_mat, g2), transpose(g_mat))
        v = matmul(matmul(bt, d2), transpose(bt))
        m = [[u[i][j] * v[i][j] for j in range(a)] for i in range(a)]
        assert matmul(matmul(at, m), transpose(at)) == correlate_2d(d2, g2)


@pytest.mark.parametrize("tile", [2, 4])
def test_matrices_reproduce_a_small_conv_in_float64(tile):
    torch.manual_seed(tile)
    at, g_mat, bt = winograd_matrices(tile)
    a = tile + 2
    d, g = torch.randn(a, a, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    y = at @ ((g_mat @ g @ g_mat.T) * (bt @ d @ bt.T)) @ at.T
    expected = F.conv2d(d[None, None], g[None, None])[0, 0]
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-13)
    d1, g1 = torch.randn(a, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    y1 = at @ ((g_mat @ g1) * (bt @ d1))
    torch.testing.assert_close(y1, F.conv1d(d1[None, None], g1[None, None])[0, 0],
                               rtol=0, atol=1e-13)


def test_toom_cook_rejects_repeated_or_missing_points():
    with pytest.raises(ValueError, match="needs 3 distinct finite points"):
        toom_cook_matrices(2, 3, (0, 1, 1))
    with pytest.raises(ValueError, match="needs 5 distinct finite points"):
        toom_cook_matrices(4, 3, (0, 1, -1))


# ----------------------------------------------------------------------------- the convolution

SHAPES = [  # (batch, in, out, height, width, padding)
    (1, 1, 1, 3, 3, 0), (1, 1, 1, 5, 5, 0), (1, 1, 3, 4, 4, 1), (2, 3, 4, 7, 9, 1),
    (1, 2, 5, 10, 6, 0), (4, 8, 8, 13, 13, 1), (3, 16, 8, 11, 17, 0), (1, 64, 32, 27, 27, 1),
    (2, 256, 16, 14, 11, 1), (1, 48, 192, 13, 13, 1),
]
#: fp32 tolerance each tile meets against F.conv2d over SHAPES (measured: F(2x2) <= 2e-6,
#: F(4x4) <= 2.5e-5 absolute on outputs up to ~3: larger points, larger rounding).
FP32_ATOL = {2: 1e-5, 4: 1e-4}


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}c{}o{}_{}x{}p{}".format(*s))
def test_winograd_equals_conv2d_in_fp32_and_float64(tile, shape):
    n, c, o, h, w, pad = shape
    torch.manual_seed(sum(shape))
    conv = nn.Conv2d(c, o, 3, padding=pad, bias=bool(h % 2))  # some with, some without bias
    x = torch.randn(n, c, h, w)
    with torch.no_grad():
        expected = conv(x)
        got = winograd_conv2d(x, conv.weight, conv.bias, pad, tile)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=0, atol=FP32_ATOL[tile])
        w64 = conv.weight.double()
        b64 = None if conv.bias is None else conv.bias.double()
        torch.testing.assert_close(winograd_conv2d(x.double(), w64, b64, pad, tile),
                                   F.conv2d(x.double(), w64, b64, padding=pad),
                                   rtol=0, atol=1e-11)


def test_f4x4_is_measurably_less_precise_than_f2x2_in_fp32():
    torch.manual_seed(5)
    conv = nn.Conv2d(256, 32, 3, padding=1)
    x = torch.randn(2, 256, 16, 16)
    with torch.no_grad():
        exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
        error = {tile: (winograd_conv2d(x, conv.weight, conv.bias, 1, tile).double() - exact)
                 .abs().max().item() for tile in (2, 4)}
        direct = (conv(x).double() - exact).abs().max().item()
    assert error[2] < 5 * direct + 1e-6 and error[2] < 5e-6  # F(2x2): about direct conv's
    assert 3 * error[2] < error[4] < 1e-4  # F(4x4): larger points, larger rounding


def test_asymmetric_padding_and_input_checks():
    torch.manual_seed(0)
    x, w = torch.randn(1, 2, 6, 7), torch.randn(3, 2, 3, 3)
    got = winograd_conv2d(x, w, None, (2, 0, 1, 3), tile=4)
    torch.testing.assert_close(got, F.conv2d(F.pad(x, (2, 0, 1, 3)), w), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match=r"\(O, C, 3, 3\) weight, got .* and \(3, 2, 5, 5\)"):
        winograd_conv2d(x, torch.randn(3, 2, 5, 5))
    with pytest.raises(ValueError, match="input has 2 channels, the weight expects 4"):
        winograd_conv2d(x, torch.randn(3, 4, 3, 3))
    with pytest.raises(ValueError, match="smaller than the 3x3 kernel"):
        winograd_conv2d(torch.randn(1, 2, 2, 5), w)
    with pytest.raises(ValueError, match=r"tile must be one of \(2, 4\).*got 3"):
        winograd_conv2d(x, w, tile=3)


def test_filter_transform_is_g_g_gt_per_channel_pair():
    torch.manual_seed(0)
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    _, g, _ = winograd_matrices(4)
    u = transform_filter(w, 4)  # (36, O, C)
    assert u.shape == (36, 2, 3)
    torch.testing.assert_close(u[:, 1, 2].reshape(6, 6), g @ w[1, 2] @ g.T)


# ----------------------------------------------------------------------------- the layer


@pytest.mark.parametrize("tile", [2, 4])
def test_layer_keeps_the_convs_state_and_matches_it_in_every_padding_mode(tile):
    torch.manual_seed(1)
    for conv in (nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, 3, bias=False),
                 nn.Conv2d(4, 6, 3, padding="same"),
                 nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
                 nn.Conv2d(4, 6, 3, padding=2, padding_mode="circular")):
        wino = WinogradConv2d.from_conv(conv, tile)
        assert wino.weight is conv.weight and wino.bias is conv.bias
        assert list(wino.state_dict()) == list(conv.state_dict())
        x = torch.randn(2, 4, 9, 10)
        with torch.no_grad():
            torch.testing.assert_close(wino(x), conv(x), rtol=0, atol=FP32_ATOL[tile])
    assert f"winograd=F({tile}x{tile},3x3)" in repr(wino)


def test_gradients_reach_the_weight_and_the_cached_transform_follows_weight_changes():
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    wino = WinogradConv2d.from_conv(nn.Conv2d(3, 4, 3, padding=1), 2)
    wino.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 8, 8)
    conv(x).square().sum().backward()
    wino(x).square().sum().backward()
    torch.testing.assert_close(wino.weight.grad, conv.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(wino.bias.grad, conv.bias.grad, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        before = wino(x)
        cached = wino.transformed_weight()
        assert wino.transformed_weight() is cached  # no recomputation while unchanged
        wino.weight.mul_(2)  # an in-place update (an optimizer step, load_state_dict)
        after = wino(x)
    torch.testing.assert_close(after - wino.bias.reshape(1, -1, 1, 1),
                               2 * (before - wino.bias.reshape(1, -1, 1, 1)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("conv, problem", [
    (nn.Conv2d(3, 4, 5, padding=2), r"kernel_size \(5, 5\)"),
    (nn.Conv2d(3, 4, 3, stride=2), r"stride \(2, 2\)"),
    (nn.Conv2d(3, 4, 3, dilation=2), r"dilation \(2, 2\)"),
    (nn.Conv2d(4, 4, 3, groups=2), "groups 2"),
], ids=["5x5", "stride2", "dilation2", "groups2"])
def test_layer_refuses_what_winograd_does_not_support_naming_it(conv, problem):
    with pytest.raises(ValueError, match=rf"layer 'features.0' .* cannot use Winograd F\(4x4,3x3\):"
                                         rf" it supports kernel_size 3x3, stride 1, dilation 1, "
                                         rf"groups 1 \(any padding\); got {problem}"):
        WinogradConv2d.from_conv(conv, 4, name="features.0")


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("name, side", [("squeezenet1_1", 64), ("squeezenet_cifar", 32)])
@pytest.mark.parametrize("tile", [2, 4])
def test_model_transform_swaps_the_3x3_stride1_convs_and_keeps_outputs(name, side, tile):
    torch.manual_seed(3)
    model = create_model(name).eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected = model(x)
    report = winograd_(model, tile)
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    eligible = [n for n, m in create_model(name).named_modules() if isinstance(m, nn.Conv2d)
                and m.kernel_size == (3, 3) and m.stride == (1, 1)]
    assert report["swapped"] == eligible  # squeezenet_cifar's 3x3 stride-1 stem as well
    for n in report["swapped"]:
        assert type(model.get_submodule(n)) is WinogradConv2d
    assert all(type(model.get_submodule(n)) is nn.Conv2d for n in report["kept"])
    if name == "squeezenet1_1":
        assert len(report["swapped"]) == 8
        assert report["kept"]["features.0"] == "stride (2, 2)"  # the stem: 3x3 stride 2
        assert report["kept"]["features.3.squeeze"] == "kernel_size (1, 1)"
    again = winograd_(model, tile)  # already Winograd: kept, not wrapped twice
    assert again["swapped"] == []
    assert all("WinogradConv2d" in again["kept"][n] for n in report["swapped"])


def test_model_transform_leaves_conv_subclasses_and_bad_tiles():
    class OtherConv(nn.Conv2d):
        pass

    model = nn.Sequential(OtherConv(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
    report = winograd_(model, 2)
    assert report["swapped"] == ["1"] and report["kept"] == {"0": "a OtherConv, not a plain Conv2d"}
    with pytest.raises(ValueError, match=r"tile must be one of \(2, 4\)"):
        winograd_(model, tile=6)


# ----------------------------------------------------------------------------- multiplications


@pytest.mark.parametrize("tile, ratio", [(2, 2.25), (4, 4.0)])
def test_elementwise_stage_saves_exactly_2_25x_and_4x(tile, ratio):
    counts = winograd_layer_multiplies(16, 64, 56, 56, tile)  # 56 divisible by 2 and 4
    assert counts["tile_ratio"] == ratio
    assert counts["elementwise_ratio"] == ratio
    assert counts["direct"] == 16 * 64 * 56 * 56 * 9
    a, tiles = tile + 2, (56 // tile) ** 2
    assert counts["tiles"] == tiles
    assert counts["winograd_elementwise"] == 16 * 64 * tiles * a * a
    assert counts["input_transform"] == 16 * tiles * a ** 4
    assert counts["output_transform"] == 64 * tiles * tile ** 2 * a ** 2
    assert counts["winograd_total"] == (counts["winograd_elementwise"]
                                        + counts["input_transform"] + counts["output_transform"])
    assert 1 < counts["total_ratio"] < ratio
    ragged = winograd_layer_multiplies(16, 64, 55, 55, tile)  # a partial tile costs a whole one
    assert ragged["tile_ratio"] == ratio and ragged["elementwise_ratio"] < ratio


def test_multiply_table_of_squeezenet1_1_lists_its_expand3x3_layers():
    model = create_model("squeezenet1_1")
    table = winograd_multiply_table(model, 224, tile=2)
    assert list(table) == [f"features.{i}.expand3x3" for i in (3, 4, 6, 7, 9, 10, 11, 12)]
    row = table["features.3.expand3x3"]
    assert (row["in_channels"], row["out_channels"], row["output"]) == (16, 64, [55, 55])
    assert row["direct"] == 16 * 64 * 55 * 55 * 9 and row["tiles"] == 28 * 28
    winograd_(model, 4)  # swapped layers are still counted, with the tile asked for
    assert winograd_multiply_table(model, 224, tile=4)["features.12.expand3x3"]["tiles"] == 16


def test_speed_benchmark_writes_its_json(tmp_path):
    import json

    from benchmark_scripts import load_benchmark

    bench = load_benchmark("winograd_speed")
    out = tmp_path / "winograd.json"
    result = bench.main(["--input-size", "64", "--batches", "1", "2", "--repeats", "1",
                         "--large-repeats", "1", "--warmup", "0", "--threads", "1",
                         "--max-layers", "1", "-o", str(out)])
    saved = json.loads(out.read_text())
    assert saved["benchmark"] == "winograd_speed" and saved["torch_threads"] == 1
    assert "cpu" in saved["environment"] and saved["environment"]["torch"] == torch.__version__
    assert [(r["layer"], r["batch"]) for r in result["layers"]] == [
        ("features.3.expand3x3", 1), ("features.3.expand3x3", 2)]
    row = result["layers"][0]
    assert row["conv2d_ms"] > 0 and row["winograd_f2_ms"] > 0 and row["winograd_f4_ms"] > 0
    assert row["winograd_f2_max_abs_error"] < 1e-5 and row["winograd_f4_max_abs_error"] < 1e-4
    assert row["winograd_f4_multiplies"]["tile_ratio"] == 4.0
