"""The compact blocks (layers/spatial.py, inception.py, residual.py): exact parameter counts
from each block's formula, output shapes, the lecture's Inception arithmetic, and the Fire
module's expand3x3 variants threaded through the SqueezeNet builder."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from model_configs import TINY

from squeezelab import create_model
from squeezelab.compress.fold import fold_batchnorm
from squeezelab.compress.pruning.channels import remove_channels
from squeezelab.layers import (
    EXPAND3X3_KINDS,
    Bottleneck,
    FactorizedConv,
    Fire,
    FlattenedConv,
    Inception,
    InvertedResidual,
    SeparableConv,
    XceptionBlock,
    spatial_conv,
)
from squeezelab.metrics import count_macs
from squeezelab.models.googlenet import _CIFAR_LAYOUT
from squeezelab.models.layer_roles import prunable_parameters
from squeezelab.models.mobilenet import MobileNetV2
from squeezelab.models.resnet import ResNetCifar


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_weights(module: nn.Module) -> int:
    """Weights of every conv, no biases and no BatchNorm: what the lecture counts."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Conv2d))


def conv_bn(c_in: int, c_out: int, k: int = 1, groups: int = 1) -> int:
    """A bias-free k x k conv and its BatchNorm (gamma and beta per channel)."""
    return k * k * c_in * c_out // groups + 2 * c_out


# --- k x k stand-ins (spatial.py) ------------------------------------------------------------

# weights of each kind from c_in to c_out with a k x k window, and the biases it adds
def spatial_formula(kind: str, c_in: int, c_out: int, k: int, bias: bool) -> int:
    b = c_out if bias else 0
    if kind == "standard":
        return k * k * c_in * c_out + b
    if kind == "factorized":  # 1 x k (c_in -> c_in, with its own bias: no BN) then k x 1
        return (k * c_in * c_in + c_in) + k * c_in * c_out + b
    if kind == "flattened":  # lateral 1x1, then vertical and horizontal k-tap per channel
        return c_in * c_out + 2 * k * c_out + b
    if kind == "separable":  # depthwise k x k per input channel, then pointwise
        return k * k * c_in + c_in * c_out + b
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", EXPAND3X3_KINDS)
@pytest.mark.parametrize("c_in,c_out,k", [(16, 64, 3), (5, 7, 3), (8, 12, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_spatial_convs_count_and_keep_the_shape(kind, c_in, c_out, k, bias):
    conv = spatial_conv(kind, c_in, c_out, k, bias=bias)
    assert params(conv) == spatial_formula(kind, c_in, c_out, k, bias)
    assert conv.out_channels == c_out
    out = conv(torch.randn(2, c_in, 9, 11))  # "same" padding, stride 1, odd and even sides
    assert out.shape == (2, c_out, 9, 11)


def test_spatial_conv_refuses_unknown_kinds_and_even_kernels():
    with pytest.raises(ValueError, match=r"must be one of \('standard', .*got 'winograd'"):
        spatial_conv("winograd", 4, 4)
    with pytest.raises(ValueError, match="kernel_size must be an odd positive int.*got 4"):
        SeparableConv(4, 4, 4)
    with pytest.raises(ValueError, match=r"k x k \(k >= 5\).*got kernel_size 3"):
        FactorizedConv(4, 4, 3, square=True)


def test_flattened_conv_is_a_rank_one_3d_filter():
    """Lateral, vertical and horizontal 1-D filters in sequence are one 3x3 conv whose filter f
    is the outer product lateral[f] x vertical[f] x horizontal[f] (Jin et al., Section 3)."""
    torch.manual_seed(0)
    flat = FlattenedConv(4, 6, 3, bias=False)
    lateral = flat.lateral.weight[:, :, 0, 0]          # (out, in)
    vertical = flat.vertical.weight[:, 0, :, 0]        # (out, 3)
    horizontal = flat.horizontal.weight[:, 0, 0, :]    # (out, 3)
    weight = torch.einsum("fc,fi,fj->fcij", lateral, vertical, horizontal)
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        assert torch.allclose(flat(x), nn.functional.conv2d(x, weight, padding=1), atol=1e-5)


def test_factorized_conv_with_batchnorm_and_square_form():
    # 1x3 (c_in -> c_in) + BN, then 3x1 to c_out without a bias (a BatchNorm follows outside)
    asym = FactorizedConv(16, 64, 3, bias=False, batch_norm=True)
    assert params(asym) == 3 * 16 * 16 + 2 * 16 + 3 * 16 * 64
    # Inception-v2: a 5x5 as two 3x3 (window 5), a 7x7 as three
    five = FactorizedConv(8, 12, 5, mid_chans=12, square=True, bias=False, batch_norm=True)
    assert params(five) == conv_bn(8, 12, 3) + 9 * 12 * 12
    seven = FactorizedConv(8, 12, 7, square=True, bias=False, batch_norm=True)
    assert params(seven) == 2 * conv_bn(8, 8, 3) + 9 * 8 * 12
    # the stacked 3x3s see exactly a 5x5 window: an impulse spreads 2 pixels each way
    with torch.no_grad():
        for m in five.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)
        five.eval()
        x = torch.zeros(1, 8, 11, 11)
        x[0, :, 5, 5] = 1.0
        reach = (five(x)[0, 0].abs() > 0).nonzero()
    assert (reach.min().item(), reach.max().item()) == (3, 7)


# --- Inception (GoogLeNet, arXiv 1409.4842) ----------------------------------------------------

def inception_formula(c, n1, n3, n5, r3=None, r5=None, pp=None, factorized=False):
    """Parameters of an Inception module with BatchNorm after every conv."""
    b3 = conv_bn(c, n3, 3) if r3 is None else conv_bn(c, r3) + conv_bn(r3, n3, 3)
    c5 = c if r5 is None else r5
    tail = conv_bn(c5, n5, 3) + conv_bn(n5, n5, 3) if factorized else conv_bn(c5, n5, 5)
    b5 = tail + (0 if r5 is None else conv_bn(c, r5))
    return conv_bn(c, n1) + b3 + b5 + (0 if pp is None else conv_bn(c, pp))


@pytest.mark.parametrize("config", [
    dict(c=64, n1=32, n3=64, n5=16, r3=48, r5=8, pp=16),   # googlenet_cifar's 3a
    dict(c=24, n1=8, n3=16, n5=4),                          # naive: no reductions
    dict(c=24, n1=8, n3=16, n5=4, r3=6, r5=2, pp=3, factorized=True),
])
def test_inception_counts_and_concatenates(config):
    c = config["c"]
    block = Inception(c, config["n1"], config["n3"], config["n5"], reduce3x3=config.get("r3"),
                      reduce5x5=config.get("r5"), pool_proj=config.get("pp"),
                      factorized=config.get("factorized", False))
    assert params(block) == inception_formula(**config)
    width = config["n1"] + config["n3"] + config["n5"] + config.get("pp", c)
    assert block.out_channels == width
    assert block(torch.randn(2, c, 8, 8)).shape == (2, width, 8, 8)


def test_lecture_inception_arithmetic():
    """The lecture's module: c_in = 512 channels in, every branch (1x1, 3x3, 5x5) out to
    c_out = 1024 channels, reductions to c_int = 64; conv weights counted, no biases, and the
    pool branch has no projection (it has no weights in either form):

    naive:          512*1024 (1x1) + 9*512*1024 (3x3) + 25*512*1024 (5x5)
                    = (1 + 9 + 25) * 524,288 = 18,350,080
    with reduction: 512*1024 (1x1)
                    + 512*64 + 9*64*1024 (1x1 to 64, then 3x3: 32,768 + 589,824 = 622,592)
                    + 512*64 + 25*64*1024 (1x1 to 64, then 5x5: 32,768 + 1,638,400)
                    = 524,288 + 622,592 + 1,671,168 = 2,818,048, 6.5x fewer.

    Built by the same Inception class as googlenet_cifar (on the meta device: no memory)."""
    with torch.device("meta"):
        naive = Inception(512, 1024, 1024, 1024)
        reduced = Inception(512, 1024, 1024, 1024, reduce3x3=64, reduce5x5=64)
    assert conv_weights(naive) == 18_350_080
    assert conv_weights(reduced) == 2_818_048
    assert conv_weights(reduced.branch3x3) == 622_592
    assert naive.out_channels == 3 * 1024 + 512  # the pool passes its 512 channels through


def test_googlenet_cifar_is_the_sum_of_its_blocks():
    chans, total = 64, conv_bn(3, 64, 3)  # the 3x3 stem
    for item in _CIFAR_LAYOUT:
        if item == "pool":
            continue
        n1, r3, n3, r5, n5, pp = item
        total += inception_formula(chans, n1, n3, n5, r3, r5, pp)
        chans = n1 + n3 + n5 + pp
    total += chans * 10 + 10  # the linear classifier
    assert params(create_model("googlenet_cifar")) == total == 841_282


# --- Xception (arXiv 1610.02357) ---------------------------------------------------------------

def test_xception_block_counts_and_shortcuts():
    # entry-flow style: 2 separable convs 32 -> 64, stride 2, projection shortcut
    block = XceptionBlock(32, 64, reps=2, stride=2)
    sep = lambda c_in, c_out: 9 * c_in + c_in * c_out + 2 * c_out  # dw + pw + BN
    assert params(block) == sep(32, 64) + sep(64, 64) + conv_bn(32, 64)
    assert block(torch.randn(2, 32, 16, 16)).shape == (2, 64, 8, 8)
    # middle-flow style: 3 separable convs 64 -> 64, identity shortcut
    middle = XceptionBlock(64, 64, reps=3)
    assert isinstance(middle.shortcut, nn.Identity) and params(middle) == 3 * sep(64, 64)
    x = torch.randn(2, 64, 8, 8)
    kept = x.clone()
    middle.eval()(x)
    # the first ReLU is not in place: the shortcut adds the input as it came
    assert torch.equal(x, kept)


def test_lecture_xception_layer_arithmetic():
    """At the lecture's channels (512 in, 1024 out), one 3x3 layer three ways, through the
    blocks the models use: a full 3x3 conv 9*512*1024 = 4,718,592; Inception's way, a 1x1
    reduction to 64 then a 3x3, 512*64 + 9*64*1024 = 622,592; Xception's depthwise-separable
    conv, 9*512 + 512*1024 = 528,896, 8.9x fewer than the full conv."""
    with torch.device("meta"):
        full = spatial_conv("standard", 512, 1024, bias=False)
        inception = Inception(512, 1024, 1024, 1024, reduce3x3=64, reduce5x5=64).branch3x3
        separable = spatial_conv("separable", 512, 1024, bias=False)
    assert conv_weights(full) == 4_718_592
    assert conv_weights(inception) == 622_592
    assert conv_weights(separable) == 528_896


# --- residual blocks (ResNet arXiv 1512.03385, MobileNetV2 arXiv 1801.04381) -------------------

@pytest.mark.parametrize("c_in,mid,stride", [(256, 64, 1), (64, 16, 1), (64, 32, 2)])
def test_bottleneck_counts_and_shortcuts(c_in, mid, stride):
    block = Bottleneck(c_in, mid, stride)
    out = 4 * mid
    projection = stride != 1 or c_in != out
    expected = conv_bn(c_in, mid) + conv_bn(mid, mid, 3) + conv_bn(mid, out)
    expected += conv_bn(c_in, out) if projection else 0
    assert params(block) == expected
    assert isinstance(block.shortcut, nn.Identity) is not projection
    assert block(torch.randn(2, c_in, 8, 8)).shape == (2, out, 8 // stride, 8 // stride)
    if c_in == 256:  # ResNet-50's conv2_x block: 1x1 256->64, 3x3 64->64, 1x1 64->256
        assert conv_weights(block) == 16_384 + 36_864 + 16_384


@pytest.mark.parametrize("c_in,c_out,stride,t", [(16, 16, 1, 6), (16, 24, 2, 6),
                                                 (32, 16, 1, 1), (24, 24, 1, 6)])
def test_inverted_residual_counts_and_residual(c_in, c_out, stride, t):
    block = InvertedResidual(c_in, c_out, stride, t)
    hidden = t * c_in
    expected = (conv_bn(c_in, hidden) if t != 1 else 0) + conv_bn(hidden, hidden, 3, hidden)
    expected += conv_bn(hidden, c_out)
    assert params(block) == expected
    assert block.use_residual == (stride == 1 and c_in == c_out)
    assert ("expand" in dict(block.conv.named_children())) == (t != 1)
    x = torch.randn(2, c_in, 8, 8)
    assert block(x).shape == (2, c_out, 8 // stride, 8 // stride)
    if block.use_residual:  # a zeroed projection leaves exactly the input
        nn.init.zeros_(block.conv.project.bn.weight)
        assert torch.allclose(block.eval()(x), x)


def test_resnet_bottleneck_cifar_is_the_sum_of_its_blocks():
    total, chans = conv_bn(3, 16, 3), 16  # the 3x3 stem
    for mid in (16, 32, 64, 128):
        for block in range(2):
            total += conv_bn(chans, mid) + conv_bn(mid, mid, 3) + conv_bn(mid, 4 * mid)
            if block == 0:  # stage 1 widens 16 -> 64, the others also halve the maps
                total += conv_bn(chans, 4 * mid)
            chans = 4 * mid
    total += chans * 10 + 10
    assert params(create_model("resnet_bottleneck_cifar")) == total == 882_394


def test_zoo_blocks_rebuild_the_published_networks():
    """The blocks, laid out as the papers' ImageNet networks, give torchvision's counts:
    MobileNetV2 3,504,872; ResNet-50 25,557,032 (its 7x7 stem in place of our 3x3)."""
    assert params(MobileNetV2(1000, 3, 0.2, 1.0, stem_stride=2)) == 3_504_872
    with torch.device("meta"):
        resnet50 = ResNetCifar(1000, 3, 0.0, 64, (3, 4, 6, 3), block="bottleneck")
    assert params(resnet50) - 9 * 3 * 64 + 49 * 3 * 64 == 25_557_032


# --- Fire's expand3x3 and the SqueezeNet builder ------------------------------------------------

def fire_formula(c_in: int, s: int, e1: int, e3: int, kind: str, batch_norm: bool) -> int:
    if not batch_norm:
        return (c_in * s + s) + (s * e1 + e1) + spatial_formula(kind, s, e3, 3, bias=True)
    stand_in = spatial_formula(kind, s, e3, 3, bias=False)
    if kind == "factorized":  # the 1x3's bias becomes a BatchNorm
        stand_in += s
    return conv_bn(c_in, s) + conv_bn(s, e1) + stand_in + 2 * e3


@pytest.mark.parametrize("kind", EXPAND3X3_KINDS)
@pytest.mark.parametrize("batch_norm", [False, True])
def test_fire_expand3x3_variants_count_and_run(kind, batch_norm):
    fire = Fire(32, 8, 16, 16, batch_norm=batch_norm, expand3x3=kind, bypass="simple")
    assert fire.expand3x3_kind == kind and fire.out_channels == 32
    assert params(fire) == fire_formula(32, 8, 16, 16, kind, batch_norm)
    out = fire(torch.randn(2, 32, 7, 7))
    assert out.shape == (2, 32, 7, 7) and torch.isfinite(out).all()


def test_standard_fire_keeps_torchvision_keys():
    keys = set(Fire(32, 8, 16, 16).state_dict())
    assert {"expand3x3.weight", "expand3x3.bias"} <= keys
    separable = set(Fire(32, 8, 16, 16, expand3x3="separable").state_dict())
    assert {"expand3x3.depthwise.weight", "expand3x3.pointwise.weight"} <= separable


@pytest.mark.parametrize("kind", EXPAND3X3_KINDS)
def test_squeezenet_builder_threads_expand3x3(kind):
    model = create_model("squeezenet_cifar", expand3x3=kind)
    fires = [m for m in model.modules() if isinstance(m, Fire)]
    assert len(fires) == 8 and {f.expand3x3_kind for f in fires} == {kind}
    standard = create_model("squeezenet_cifar")
    # the model differs from the standard one by its eight expand3x3 branches only
    delta = sum(fire_formula(1, s, 0, e3, kind, True) - fire_formula(1, s, 0, e3, "standard",
                                                                     True)
                for s, _, e3 in model.fire_config)
    assert params(model) == params(standard) + delta
    assert model.spec == {"name": "squeezenet_cifar",
                          "kwargs": {"num_classes": 10, "expand3x3": kind}}
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    if kind != "standard":
        assert count_macs(model, 32) < count_macs(standard, 32)


def test_unknown_expand3x3_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"expand3x3 must be one of \('standard', 'factorized', "
                                         r"'flattened', 'separable'\), got 'winograd'"):
        create_model("squeezenet_cifar", expand3x3="winograd")
    with pytest.raises(ValueError, match="expand3x3 must be one of"):
        Fire(8, 4, 4, 4, expand3x3="depthwise")


@pytest.mark.parametrize("kind", ["factorized", "flattened", "separable"])
def test_variant_expand3x3_folds_and_keeps_its_role(kind):
    """BatchNorm folding finds the BatchNorm after a factorised expand3x3's last conv; every
    conv of the branch answers to the layer type "expand3x3" (pruning, weight sharing)."""
    torch.manual_seed(0)
    model = create_model("squeezenet_cifar", expand3x3=kind, **TINY)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    model.eval()
    folded = fold_batchnorm(model).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4, rtol=1e-4)
    roles = {p.module_name: p.types[0] for p in prunable_parameters(model).values()}
    inner = [n for n in roles if n.startswith("features.4.expand3x3.")]
    assert len(inner) >= 2 and {roles[n] for n in inner} == {"expand3x3"}


def test_channel_pruning_refuses_a_variant_expand3x3():
    model = create_model("squeezenet_cifar", expand3x3="separable", **TINY)
    with pytest.raises(ValueError, match="standard 3x3 expand convs, got expand3x3='separable'"):
        remove_channels(model, {"features.4.squeeze": [0]})
