"""XNOR-Net on packed bits (arXiv 1603.05279): the bit layout, n - 2 popcount(a XOR b) against
+-1 dot products (exact integers, tail bits masked), packed conv and linear layers against the
float simulation of binary.py (the same integers, the same outputs), the model transform, and
the speed benchmark's JSON."""
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from benchmark_scripts import load_benchmark

from squeezelab import create_model
from squeezelab.compress.quantization.binary import (
    BinaryConfig,
    BinaryConv2d,
    BinaryLinear,
    binarize_,
)
from squeezelab.compress.quantization.ste import binary_sign
from squeezelab.compress.quantization.xnor_bits import (
    PackedXnorConv2d,
    PackedXnorLinear,
    pack_sign_bits,
    pack_xnor_,
    sign_bits,
    tail_mask,
    words_for,
    xnor_popcount_dot,
)

XNOR_NET = BinaryConfig(method="xnor_net")


def pm1_dot(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """sign(a) @ sign(b)^T in int64, the reference the bits must reproduce."""
    return (binary_sign(a).long() @ binary_sign(b).long().T).numpy()


# ----------------------------------------------------------------------------- bits and words


def test_bit_layout_sign_of_zero_and_zero_tails():
    x = torch.zeros(1, 70)
    x[0, [0, 3, 63, 64, 69]] = -1.0
    x[0, 5] = -0.0  # sign(-0.0) = +1, as binary_sign
    words = sign_bits(x)
    assert words.dtype == np.uint64 and words.shape == (1, 2)
    assert int(words[0, 0]) == (1 << 0) | (1 << 3) | (1 << 63)
    assert int(words[0, 1]) == (1 << 0) | (1 << 5)  # elements 64 and 69; bits 6..63 are zero
    assert [words_for(k) for k in (1, 63, 64, 65, 128, 129)] == [1, 1, 1, 2, 2, 3]
    assert int(tail_mask(70)) == (1 << 6) - 1 and int(tail_mask(64)) == (1 << 64) - 1
    assert pack_sign_bits(np.ones((3, 2, 10), bool)).shape == (3, 2, 1)


@pytest.mark.parametrize("rows", [1, 3, 5, 40])  # both loops of xnor_popcount_dot
@pytest.mark.parametrize("k", [1, 7, 63, 64, 65, 100, 200, 577])
def test_popcount_dot_equals_pm1_dot_exactly(rows, k):
    torch.manual_seed(k * 100 + rows)
    a, b = torch.randn(rows, k), torch.randn(9, k)
    a[a.abs() < 0.1] = 0.0  # exact zeros count as +1
    got = xnor_popcount_dot(sign_bits(a), sign_bits(b), k)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, pm1_dot(a, b))


@pytest.mark.parametrize("rows", [2, 30])
def test_bits_past_n_never_count(rows):
    rng = np.random.default_rng(rows)
    k = 70  # 2 words, 58 unused bits in the second
    a = rng.integers(0, 2 ** 63, size=(rows, 2), dtype=np.uint64)
    b = rng.integers(0, 2 ** 63, size=(5, 2), dtype=np.uint64)
    clean_a, clean_b = a.copy(), b.copy()
    clean_a[:, 1] &= tail_mask(k)
    clean_b[:, 1] &= tail_mask(k)
    expected = xnor_popcount_dot(clean_a, clean_b, k)
    garbage = ~tail_mask(k)
    np.testing.assert_array_equal(xnor_popcount_dot(a | np.array([0, garbage], np.uint64),
                                                    b, k), expected)
    np.testing.assert_array_equal(xnor_popcount_dot(a, b, k), expected)
    # the count itself, bit by bit: k - 2 * (disagreements in the first k bits)
    bits = lambda w: np.unpackbits(w.view(np.uint8), axis=-1, bitorder="little")[:, :k]
    disagree = (bits(clean_a)[:, None, :] != bits(clean_b)[None, :, :]).sum(-1)
    np.testing.assert_array_equal(expected, k - 2 * disagree)


def test_popcount_dot_rejects_mismatched_words():
    a = np.zeros((2, 2), np.uint64)
    with pytest.raises(ValueError, match="70 bits take 2 words, got 2 and 1"):
        xnor_popcount_dot(a, np.zeros((3, 1), np.uint64), 70)
    with pytest.raises(ValueError, match="two 2-D uint64 word arrays"):
        xnor_popcount_dot(a.astype(np.int64), a, 70)


# ----------------------------------------------------------------------------- layers

CONVS = [  # (in, out, kernel, stride, padding, dilation, groups, side); K = in/groups * k * k
    (3, 5, 3, 1, 1, 1, 1, 7),      # K = 27
    (7, 4, 3, 1, 1, 1, 1, 9),      # K = 63
    (8, 6, 3, 1, 1, 1, 1, 8),      # K = 72: a second word with 8 bits
    (64, 8, 3, 1, 1, 1, 1, 6),     # K = 576: 9 full words
    (5, 4, 3, 2, 1, 1, 1, 10),     # stride 2, even side
    (5, 4, 3, 2, 0, 1, 1, 11),     # stride 2, no padding
    (6, 4, 3, 1, 2, 2, 1, 9),      # dilation 2
    (8, 6, 3, 1, 1, 1, 2, 7),      # groups 2
    (65, 3, 1, 1, 0, 1, 1, 5),     # 1x1, K = 65
    (4, 4, 5, 2, 2, 1, 4, 11),     # 5x5 depthwise, stride 2
    (3, 2, 3, 1, 3, 1, 1, 4),      # padding wider than the kernel's reach
]


@pytest.mark.parametrize("spec", CONVS, ids=lambda s: "c{}o{}k{}s{}p{}d{}g{}_{}".format(*s))
def test_packed_conv_gives_the_simulations_integers_and_outputs(spec):
    c, o, k, s, p, d, g, side = spec
    torch.manual_seed(sum(spec))
    simulated = BinaryConv2d.from_float(nn.Conv2d(c, o, k, s, p, d, g, bias=side % 2 == 1),
                                        XNOR_NET)
    packed = PackedXnorConv2d.from_binary(simulated)
    x = torch.randn(2, c, side, side)
    x[x.abs() < 0.05] = 0.0
    with torch.no_grad():
        dots = F.conv2d(binary_sign(x), binary_sign(simulated.weight), None, s, p, d, g)
        got_dots = packed.sign_dot(x)
        assert got_dots.dtype == torch.int32
        assert torch.equal(got_dots.double(), dots.double())  # integers: exact
        expected, got = simulated(x), packed(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got.shape == expected.shape and got.is_contiguous()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_packed_conv_with_same_padding_and_a_second_input_size():
    torch.manual_seed(0)
    simulated = BinaryConv2d.from_float(nn.Conv2d(5, 3, 4, padding="same"), XNOR_NET)
    packed = PackedXnorConv2d.from_binary(simulated)
    for side in (6, 9, 6):  # the padding correction is cached per input size
        x = torch.randn(1, 5, side, side + 1)
        with torch.no_grad():
            torch.testing.assert_close(packed(x), simulated(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("features", [1, 63, 64, 65, 100, 1000])
@pytest.mark.parametrize("batch", [(1,), (5,), (2, 3)])
def test_packed_linear_gives_the_simulations_integers_and_outputs(features, batch):
    torch.manual_seed(features)
    simulated = BinaryLinear.from_float(nn.Linear(features, 7), XNOR_NET)
    packed = PackedXnorLinear.from_binary(simulated)
    x = torch.randn(*batch, features)
    with torch.no_grad():
        dots = F.linear(binary_sign(x), binary_sign(simulated.weight))
        assert torch.equal(packed.sign_dot(x).double(), dots.double())
        torch.testing.assert_close(packed(x), simulated(x), rtol=1e-5, atol=1e-6)


def test_packed_layers_store_one_bit_per_weight_and_load_their_state():
    simulated = BinaryLinear.from_float(nn.Linear(100, 6), XNOR_NET)
    packed = PackedXnorLinear.from_binary(simulated)
    assert packed.weight_bits.shape == (6, 2) and packed.weight_bits.dtype == torch.int64
    assert packed.size_bits() == 6 * 128 + 32 * 6 + 32 * 6
    other = PackedXnorLinear.from_binary(BinaryLinear.from_float(nn.Linear(100, 6), XNOR_NET))
    other.load_state_dict(packed.state_dict())
    x = torch.randn(3, 100)
    assert torch.equal(other(x), packed(x))
    conv = BinaryConv2d.from_float(nn.Conv2d(4, 6, 3, padding=1), XNOR_NET)
    pc = PackedXnorConv2d.from_binary(conv)
    other_conv = PackedXnorConv2d.from_binary(
        BinaryConv2d.from_float(nn.Conv2d(4, 6, 3, padding=1), XNOR_NET))
    xc = torch.randn(1, 4, 5, 5)
    other_conv(xc)  # caches a padding correction from its own weights...
    other_conv.load_state_dict(pc.state_dict())
    assert torch.equal(other_conv(xc), pc(xc))  # ...which loading the state replaces


def test_packing_refuses_layers_without_binary_inputs_and_bad_inputs():
    weights_only = BinaryLinear.from_float(nn.Linear(8, 2), BinaryConfig(method="xnor"))
    with pytest.raises(ValueError, match="method='xnor_net'.*got a BinaryLinear with "
                                         "method='xnor'"):
        PackedXnorLinear.from_binary(weights_only)
    with pytest.raises(ValueError, match="needs a BinaryConv2d .* got a Conv2d"):
        PackedXnorConv2d.from_binary(nn.Conv2d(2, 2, 3))
    packed = PackedXnorConv2d.from_binary(BinaryConv2d.from_float(nn.Conv2d(2, 2, 3), XNOR_NET))
    with pytest.raises(ValueError, match=r"input must be \(N, 2, H, W\), got \(1, 3, 5, 5\)"):
        packed(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match="2x2 input .* smaller than the 3x3 kernel"):
        packed(torch.randn(1, 2, 2, 2))
    linear = PackedXnorLinear.from_binary(BinaryLinear.from_float(nn.Linear(8, 2), XNOR_NET))
    with pytest.raises(ValueError, match="input has 9 features, the layer expects 8"):
        linear(torch.randn(1, 9))


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("name", ["squeezenet_cifar", "alexnet_cifar"])
def test_pack_xnor_keeps_a_binarized_models_outputs(name):
    torch.manual_seed(4)
    model = create_model(name).eval()
    binarize_(model, XNOR_NET)  # first and last layers stay real
    packed = copy.deepcopy(model)
    report = pack_xnor_(packed)
    binary = [n for n, m in model.named_modules() if isinstance(m, (BinaryConv2d, BinaryLinear))]
    assert list(report) == binary
    for layer_name, row in report.items():
        module = packed.get_submodule(layer_name)
        assert isinstance(module, (PackedXnorConv2d, PackedXnorLinear))
        assert row["kind"] == type(module).__name__ and row["size_bits"] == module.size_bits()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), model(x), rtol=1e-5, atol=1e-5)
        assert torch.equal(packed(x), model(x))  # in fact bit for bit, layer after layer


def test_pack_xnor_refuses_a_model_without_xnor_net_layers():
    model = create_model("squeezenet_cifar")
    with pytest.raises(ValueError, match=r"no XNOR-Net layer to pack \(no binary layer\)"):
        pack_xnor_(model)
    binarize_(model, BinaryConfig(method="xnor"))
    with pytest.raises(ValueError, match=r"binary layers with method \['xnor'\]"):
        pack_xnor_(model)


# ----------------------------------------------------------------------------- the benchmark


def test_speed_benchmark_writes_its_json(tmp_path):
    bench = load_benchmark("xnor_speed")
    out = tmp_path / "xnor.json"
    result = bench.main(["--layers", "0", "4", "--scale", "0.05", "--batches", "1", "--repeats",
                         "1", "--warmup", "0", "--threads", "1", "-o", str(out)])
    saved = json.loads(out.read_text())
    assert saved["benchmark"] == "xnor_speed" and "cpu" in saved["environment"]
    conv, linear = result["layers"]
    assert conv["kernel"] == 3 and linear["kernel"] is None
    for row in (conv, linear):
        assert row["packed_equals_simulation"] and row["packed_ms"] > 0
        assert row["word_op_ratio"] == row["K"] / -(-row["K"] // 64)
    assert linear["K"] == 461  # 9216 * 0.05, rounded
