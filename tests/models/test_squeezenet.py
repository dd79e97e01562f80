"""SqueezeNet: torchvision key layout, metaparameters, the course-study variants, bypass."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import squeezelab
from squeezelab.layers import Fire
from squeezelab.models.squeezenet import fire_channels

# torchvision's layout: features index -> (in, squeeze, expand1x1, expand3x3) of each Fire.
V1_0_FIRES = {3: (96, 16, 64, 64), 4: (128, 16, 64, 64), 5: (128, 32, 128, 128),
              7: (256, 32, 128, 128), 8: (256, 48, 192, 192), 9: (384, 48, 192, 192),
              10: (384, 64, 256, 256), 12: (512, 64, 256, 256)}
V1_1_FIRES = {3: (64, 16, 64, 64), 4: (128, 16, 64, 64), 6: (128, 32, 128, 128),
              7: (256, 32, 128, 128), 9: (256, 48, 192, 192), 10: (384, 48, 192, 192),
              11: (384, 64, 256, 256), 12: (512, 64, 256, 256)}


def torchvision_state_shapes(conv1: tuple, fires: dict) -> dict:
    shapes = {"features.0.weight": conv1, "features.0.bias": (conv1[0],)}
    for i, (cin, s, e1, e3) in fires.items():
        p = f"features.{i}."
        shapes.update({p + "squeeze.weight": (s, cin, 1, 1), p + "squeeze.bias": (s,),
                       p + "expand1x1.weight": (e1, s, 1, 1), p + "expand1x1.bias": (e1,),
                       p + "expand3x3.weight": (e3, s, 3, 3), p + "expand3x3.bias": (e3,)})
    shapes.update({"classifier.1.weight": (1000, 512, 1, 1), "classifier.1.bias": (1000,)})
    return shapes


@pytest.mark.parametrize("name,conv1,fires,pools", [
    ("squeezenet1_0", (96, 3, 7, 7), V1_0_FIRES, (2, 6, 11)),
    ("squeezenet1_1", (64, 3, 3, 3), V1_1_FIRES, (2, 5, 8)),
])
def test_torchvision_state_dict_layout(name, conv1, fires, pools):
    model = squeezelab.create_model(name)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == torchvision_state_shapes(conv1, fires)
    for i in pools:
        pool = model.features[i]
        assert isinstance(pool, nn.MaxPool2d)
        assert (pool.kernel_size, pool.stride, pool.ceil_mode) == (3, 2, True)
    assert isinstance(model.classifier[0], nn.Dropout) and model.classifier[0].p == 0.5
    assert isinstance(model.classifier[2], nn.ReLU)
    assert isinstance(model.classifier[3], nn.AdaptiveAvgPool2d)




def torchvision_forward(sd: dict, x: torch.Tensor, fires: dict, pools: tuple) -> torch.Tensor:
    """torchvision's SqueezeNet forward in eval mode, written with F.* on a state dict: stem
    conv (stride 2) + ReLU, max-pools 3/2 with ceil_mode at ``pools`` (and index 2), each Fire
    = ReLU(squeeze) -> cat(ReLU(expand1x1), ReLU(expand3x3, padding 1)), then dropout (identity
    in eval), conv10 + ReLU and global average pooling."""
    y = F.relu(F.conv2d(x, sd["features.0.weight"], sd["features.0.bias"], stride=2))
    y = F.max_pool2d(y, 3, 2, ceil_mode=True)
    for i in range(3, 13):
        if i in pools:
            y = F.max_pool2d(y, 3, 2, ceil_mode=True)
        elif i in fires:
            p = f"features.{i}."
            s = F.relu(F.conv2d(y, sd[p + "squeeze.weight"], sd[p + "squeeze.bias"]))
            y = torch.cat([
                F.relu(F.conv2d(s, sd[p + "expand1x1.weight"], sd[p + "expand1x1.bias"])),
                F.relu(F.conv2d(s, sd[p + "expand3x3.weight"], sd[p + "expand3x3.bias"],
                                padding=1))], 1)
    y = F.relu(F.conv2d(y, sd["classifier.1.weight"], sd["classifier.1.bias"]))
    return F.adaptive_avg_pool2d(y, 1).flatten(1)


@pytest.mark.parametrize("name,fires,pools", [
    ("squeezenet1_0", V1_0_FIRES, (6, 11)), ("squeezenet1_1", V1_1_FIRES, (5, 8))])
def test_outputs_match_torchvision_forward(name, fires, pools):
    torch.manual_seed(0)
    model = squeezelab.create_model(name, num_classes=1000).eval()
    x = torch.randn(2, 3, 99, 99)
    with torch.no_grad():
        assert torch.allclose(model(x), torchvision_forward(model.state_dict(), x, fires, pools),
                              atol=1e-6, rtol=1e-5)


def test_init_scheme_matches_torchvision():
    torch.manual_seed(0)
    model = squeezelab.create_model("squeezenet1_0")
    conv10 = model.classifier[1].weight
    assert abs(conv10.std().item() - 0.01) < 0.001  # N(0, 0.01)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert torch.count_nonzero(m.bias) == 0
    w = model.features[0].weight  # Kaiming-uniform: bound sqrt(6 / fan_in)
    bound = (6 / (3 * 7 * 7)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound


def test_xavier_init_is_caffes_and_tames_the_bypass_without_batchnorm():
    """init="xavier": the paper's Caffe filler, uniform with variance 1 / fan_in (bound
    sqrt(3 / fan_in)), conv10 still N(0, 0.01). Without BatchNorm, Kaiming's init lets each
    bypass double the activations' variance: the complex-bypass E2 starts with logits in the
    tens (a loss far above ln 10), Caffe's keeps them near zero."""
    torch.manual_seed(0)
    model = squeezelab.create_model("squeezenet_cifar_e2", init="xavier")
    w = model.features[0].weight
    bound = (3 / w[0].numel()) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert abs(model.classifier[1].weight.std().item() - 0.01) < 0.001
    x = torch.randn(8, 3, 32, 32)
    logits = {}
    for init in ("kaiming", "xavier"):
        torch.manual_seed(0)
        with torch.no_grad():
            logits[init] = squeezelab.create_model("squeezenet_cifar_e2", bypass="complex",
                                                   init=init).eval()(x).abs().max().item()
    assert logits["kaiming"] > 5 and logits["xavier"] < 2
    with pytest.raises(ValueError, match=r"init must be one of \('kaiming', 'xavier'\)"):
        squeezelab.create_model("squeezenet_cifar_e2", init="he")


@pytest.mark.parametrize("name,conv1,fires,pools,num_params", [
    # torchvision's published parameter counts of its two SqueezeNets
    ("squeezenet1_0", (96, 3, 7, 7), V1_0_FIRES, (6, 11), 1_248_424),
    ("squeezenet1_1", (64, 3, 3, 3), V1_1_FIRES, (5, 8), 1_235_496),
])
def test_strict_load_of_torchvision_style_checkpoint(tmp_path, name, conv1, fires, pools,
                                                      num_params):
    """A state dict written the way torchvision writes one (its key order and shapes, saved
    with torch.save as a .pth) loads with strict=True through the path users take
    (``read_weights``), and the model then computes torchvision's function of those tensors."""
    from squeezelab.checkpoint import read_weights

    shapes = torchvision_state_shapes(conv1, fires)
    keys = list(shapes)
    # the exact key list, in torchvision's order: stem, 8 Fires x 3 convs x (weight, bias),
    # conv10
    assert len(keys) == 2 + 8 * 6 + 2
    assert keys[:4] == ["features.0.weight", "features.0.bias", "features.3.squeeze.weight",
                        "features.3.squeeze.bias"]
    assert keys[-4:] == ["features.12.expand3x3.weight", "features.12.expand3x3.bias",
                         "classifier.1.weight", "classifier.1.bias"]
    assert shapes["features.3.squeeze.weight"] == (16, conv1[0], 1, 1)
    assert shapes["features.12.expand3x3.weight"] == (256, 64, 3, 3)
    assert shapes["classifier.1.weight"] == (1000, 512, 1, 1)
    assert sum(torch.Size(v).numel() for v in shapes.values()) == num_params

    # weights no squeezelab model initialised: a bias is never zero, so a tensor that did not
    # load (or loaded into the wrong slot) changes the output
    torch.manual_seed(1)
    state = {k: (torch.randn(shape) * (2 / max(1, torch.Size(shape)[1:].numel())) ** 0.5
                 if len(shape) == 4 else torch.randn(shape) * 0.1)
             for k, shape in shapes.items()}
    torch.save(state, tmp_path / f"{name}.pth")  # a plain .pth, as torchvision hosts them

    weights, source = read_weights(tmp_path / f"{name}.pth")
    assert source == str(tmp_path / f"{name}.pth")
    model = squeezelab.create_model(name).eval()
    assert list(model.state_dict()) == keys  # the same names, in the same order
    model.load_state_dict(weights, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), torchvision_forward(state, x, fires, pools),
                              atol=1e-5, rtol=1e-4)
    # strict means strict: one tensor short, or one too many, is refused
    with pytest.raises(RuntimeError, match="Missing key.*classifier.1.bias"):
        model.load_state_dict({k: v for k, v in state.items() if k != "classifier.1.bias"})
    with pytest.raises(RuntimeError, match="Unexpected key.*features.1.weight"):
        model.load_state_dict({**state, "features.1.weight": torch.zeros(1)})


def test_metaparameters_give_v1_0_channels():
    assert fire_channels(8, 128, 128, 2, 0.5, 0.125) == [
        (16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
        (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]
    # pct3x3 and SR change the split: e_i = 128 at i = 0, 25% 3x3, SR 0.75
    assert fire_channels(1, 128, 0, 1, 0.25, 0.75) == [(96, 96, 32)]


@pytest.mark.parametrize("kwargs,match", [
    ({"pct3x3": 1.5}, "pct3x3 must be in"), ({"squeeze_ratio": 0}, "squeeze_ratio"),
    ({"freq": 0}, "freq must be"), ({"pool_after": (9,)}, "outside 0..7"),
    ({"bypass": "weird"}, "bypass must be one of"), ({"activation": "swish"}, "activation"),
    ({"dropout": 1.0}, "dropout must be"),
])
def test_bad_metaparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        squeezelab.create_model("squeezenet", **kwargs)


def test_simple_bypass_adds_identity_where_shapes_match():
    model = squeezelab.create_model("squeezenet1_0_simple_bypass")
    fires = [m for m in model.features if isinstance(m, Fire)]
    assert [f.bypass is not None for f in fires] == [False, True, False, True, False, True,
                                                     False, True]
    complex_model = squeezelab.create_model("squeezenet1_0_complex_bypass")
    cf = [m for m in complex_model.features if isinstance(m, Fire)]
    assert [type(f.bypass).__name__ for f in cf[:2]] == ["Conv2d", "Identity"]
    # the 1x1 bypass convs: 96->128, 128->256, 256->384, 384->512, with bias
    extra = sum(p.numel() for f in cf if isinstance(f.bypass, nn.Conv2d)
                for p in f.bypass.parameters())
    assert extra == 96 * 128 + 128 + 128 * 256 + 256 + 256 * 384 + 384 + 384 * 512 + 512


def test_simple_bypass_computes_residual():
    fire = Fire(8, 2, 4, 4, bypass="simple").eval()
    plain = Fire(8, 2, 4, 4).eval()
    plain.load_state_dict(fire.state_dict())
    x = torch.randn(1, 8, 5, 5)
    assert torch.allclose(fire(x), plain(x) + x)


def test_simple_bypass_requires_equal_channels():
    with pytest.raises(ValueError, match="equal input and output channels, got 8 -> 6"):
        Fire(8, 2, 3, 3, bypass="simple")


def test_course_study_shapes():
    # E4: no stem pool, 2x2 stem at stride 1 pad 1 -> 33x33 maps through fire2-4
    model = squeezelab.create_model("squeezenet_cifar_e4")
    sizes = {}
    for i, m in enumerate(model.features):
        if isinstance(m, Fire):
            m.register_forward_hook(lambda mod, inp, out, i=i: sizes.update({i: out.shape[-1]}))
    model(torch.randn(1, 3, 32, 32))
    assert [sizes[i] for i in (2, 3, 4)] == [33, 33, 33]
    e3 = squeezelab.create_model("squeezenet_cifar_e3")
    assert e3.classifier[0].p == 0.3
    assert sum(isinstance(m, Fire) for m in e3.modules()) == 7


@pytest.mark.parametrize("activation,cls", [("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU),
                                            ("tanh", nn.Tanh), ("relu6", nn.ReLU6),
                                            ("gelu", nn.GELU)])
def test_activation_choice(activation, cls):
    model = squeezelab.create_model("squeezenet_cifar", activation=activation)
    fire = next(m for m in model.modules() if isinstance(m, Fire))
    assert isinstance(fire.squeeze_activation, cls)


def test_fire_config_override():
    cfg = [(4, 8, 8)] * 8
    model = squeezelab.create_model("squeezenet_cifar", fire_config=cfg, stem_channels=16)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="fire_config must list 8"):
        squeezelab.create_model("squeezenet_cifar", fire_config=cfg[:3])
