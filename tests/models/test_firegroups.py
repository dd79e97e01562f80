"""fire_groups_cifar: airbench's layout made of Fire modules (models/firegroups.py)."""
import pytest
import torch

from squeezelab.layers.fire import Fire
from squeezelab.metrics import count_macs
from squeezelab.models import create_model
from squeezelab.models.firegroups import FireGroup
from squeezelab.train.fast_start import stem_conv, whiten_stem_


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def fire_params(cin, squeeze, e1, e3):
    """convs without bias (BatchNorm follows each), two BatchNorm parameters per channel"""
    return cin * squeeze + squeeze * e1 + 9 * squeeze * e3 + 2 * (squeeze + e1 + e3)


@pytest.mark.parametrize("cin,width,expected", [(24, 96, 40_464), (96, 192, 162_720),
                                                 (192, 384, 648_000)])
def test_group_parameters_are_the_fire_arithmetic(cin, width, expected):
    s, half = width // 4, width // 2
    assert fire_params(cin, s, half, half) + 2 * fire_params(width, s, half, half) == expected
    assert n_params(FireGroup(cin, width)) == expected


def test_group_pools_after_its_first_fire_and_adds_the_input_to_the_others():
    group = FireGroup(16, 32, fires=3)
    kinds = [type(m).__name__ for m in group]
    assert kinds == ["Fire", "MaxPool2d", "Fire", "Fire"]
    assert group[0].bypass is None  # 16 -> 32: nothing of the same width to add
    assert all(isinstance(f.bypass, torch.nn.Identity) for f in list(group)[2:])
    assert group(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)


def test_pool_after_moves_the_pool_later_at_the_same_parameters():
    # SqueezeNet's third strategy (downsample late): the same Fires, more of them at full size
    early, late = FireGroup(16, 32, fires=3), FireGroup(16, 32, fires=3, pool_after=2)
    assert [type(m).__name__ for m in late] == ["Fire", "Fire", "MaxPool2d", "Fire"]
    assert n_params(late) == n_params(early)
    assert late(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)
    last = FireGroup(16, 32, fires=3, pool_after=3)
    assert type(last[-1]).__name__ == "MaxPool2d"
    model = create_model("fire_groups_cifar", pool_after=2)
    assert n_params(model) == 855_336
    assert count_macs(model, 32) > 1.5 * count_macs(create_model("fire_groups_cifar"), 32)


def test_complex_bypass_gives_the_first_fire_a_1x1_conv():
    group = FireGroup(16, 32, fires=2, bypass="complex")
    assert isinstance(group[0].bypass, torch.nn.Conv2d) and group[0].bypass.kernel_size == (1, 1)
    plain = FireGroup(16, 32, fires=2, bypass="none")
    assert plain[0].bypass is None and plain[2].bypass is None
    assert n_params(group) - n_params(plain) == 16 * 32 + 32


def test_squeeze_ratio_and_pct3x3_set_the_fire_shapes():
    fire = FireGroup(8, 64, fires=1, squeeze_ratio=0.125, pct3x3=0.75)[0]
    assert isinstance(fire, Fire)
    assert fire.squeeze.out_channels == 8
    assert (fire.expand1x1.out_channels, fire.expand3x3.out_channels) == (16, 48)


@pytest.mark.parametrize("kwargs,match", [
    (dict(fires=0), "fires_per_group"), (dict(squeeze_ratio=0), "squeeze_ratio"),
    (dict(squeeze_ratio=1.5), "squeeze_ratio"), (dict(pct3x3=1.0), "pct3x3"),
    (dict(bypass="skip"), "bypass"), (dict(activation="swishy"), "activation"),
    (dict(pool_after=0), "pool_after"), (dict(fires=2, pool_after=3), "pool_after"),
])
def test_bad_group_settings_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FireGroup(8, 32, **kwargs)


def test_model_takes_the_design_space_knobs_and_any_class_count():
    model = create_model("fire_groups_cifar", num_classes=100, widths=(32, 64),
                         fires_per_group=2, squeeze_ratio=0.5, activation="gelu").eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 100)
    # the global pool lets progressive resizing feed it smaller images
    with torch.no_grad():
        assert model(torch.randn(1, 3, 24, 24)).shape == (1, 100)


def test_stem_is_the_2x2_conv_the_whitening_fills():
    model = create_model("fire_groups_cifar")
    conv = stem_conv(model)
    assert conv.kernel_size == (2, 2) and conv.out_channels == 24
    filled = whiten_stem_(model, torch.rand(64, 3, 32, 32))
    assert filled == 24  # 12 eigenvectors of the 2x2x3 patches and their negations
