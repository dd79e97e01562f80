"""Physical channel removal: exact parameter counts and unchanged outputs after cutting dead
channels out of SqueezeNet models (with and without BatchNorm), bypass handling, checkpoints."""
from __future__ import annotations

import pytest
import torch

from squeezelab.checkpoint import model_from_checkpoint, save_checkpoint
from squeezelab.compress.pruning.channels import (
    channel_importance,
    channel_norms,
    find_dead_channels,
    remove_channels,
    remove_dead_channels,
    smallest_channels,
)
from squeezelab.layers import Fire
from squeezelab.models import create_model

CONFIG = [(4, 6, 6)] * 8


def fire_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, Fire)]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def kill(model, layer, channel, bias=None):
    """Zero one output filter; optionally set its bias (no-BN) to give a known constant."""
    conv = model.get_submodule(layer)
    with torch.no_grad():
        conv.weight[channel] = 0
        if bias is not None:
            conv.bias[channel] = bias


def test_remove_dead_channels_no_bn_exact_count_and_outputs(tmp_path):
    torch.manual_seed(0)
    model = create_model("squeezenet_cifar_e2", num_classes=5, fire_config=CONFIG,
                         stem_channels=8, dropout=0.0)
    with torch.no_grad():  # nonzero biases everywhere, so folding is really exercised
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.bias.uniform_(0.05, 0.2)
    f = fire_names(model)
    kill(model, "features.0", 3, bias=-1.0)  # stem channel, relu(-1) = 0
    kill(model, f"{f[2]}.squeeze", 1, bias=-0.5)  # squeeze: constant 0 -> removable
    kill(model, f"{f[3]}.squeeze", 2)  # squeeze with constant relu(b) > 0: feeds a padded 3x3
    kill(model, f"{f[0]}.expand3x3", 4)  # constant > 0, folded into the next squeeze's bias
    kill(model, f"{f[7]}.expand1x1", 2)  # feeds the classifier at offset 2
    kill(model, f"{f[7]}.expand3x3", 0)  # feeds the classifier at offset 6 + 0
    model.eval()
    dead = find_dead_channels(model)
    assert dead == {"features.0": [3], f"{f[2]}.squeeze": [1], f"{f[0]}.expand3x3": [4],
                    f"{f[7]}.expand1x1": [2], f"{f[7]}.expand3x3": [0]}
    new, report = remove_dead_channels(model)
    # Each removed channel frees its filter + bias and one input slice of every consumer.
    stem = (3 * 2 * 2 + 1) + 4  # 2x2 stem filter over 3 inputs + bias; fire0 squeeze (4 out)
    sq = (12 + 1) + 6 + 6 * 9  # fire2 squeeze: filter over 12 inputs + bias, expand inputs
    e3_f0 = (4 * 9 + 1) + 4  # fire0 expand3x3 filter + bias, fire1 squeeze input
    e1_f7 = (4 + 1) + 5  # fire7 expand1x1 filter + bias, classifier inputs (5 classes)
    e3_f7 = (4 * 9 + 1) + 5
    assert report.params_before == n_params(model)
    assert n_params(new) == report.params_after == n_params(model) - (
        stem + sq + e3_f0 + e1_f7 + e3_f7)
    assert report.stem_channels == 7
    assert report.fire_config[0] == (4, 6, 5) and report.fire_config[2] == (3, 6, 6)
    assert report.fire_config[7] == (4, 5, 5) and report.fire_config[3] == (4, 6, 6)
    assert new.spec["kwargs"]["stem_channels"] == 7
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(new(x), model(x), atol=1e-5, rtol=1e-4)
    # The spec rebuilds the pruned model through the normal checkpoint path.
    save_checkpoint(tmp_path / "pruned", new)
    again, _ = model_from_checkpoint(tmp_path / "pruned")
    with torch.no_grad():
        assert torch.equal(again(x), new(x))


def test_remove_dead_channels_with_batchnorm():
    torch.manual_seed(1)
    model = create_model("squeezenet_cifar", bypass="none", fire_config=CONFIG, stem_channels=8)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(0.0, 0.3)  # positive: dead channels output a constant > 0
    f = fire_names(model)
    kill(model, f"{f[1]}.expand1x1", 0)  # constant folded into fire2's squeeze BN mean
    kill(model, f"{f[7]}.expand3x3", 5)  # constant folded into the classifier bias
    kill(model, f"{f[4]}.squeeze", 3)
    with torch.no_grad():  # a negative BN shift makes the squeeze channel output exactly 0
        model.get_submodule(f"{f[4]}.squeeze_bn").bias[3] = -5.0
    model.eval()
    assert find_dead_channels(model) == {f"{f[1]}.expand1x1": [0], f"{f[4]}.squeeze": [3],
                                         f"{f[7]}.expand3x3": [5]}
    new, report = remove_dead_channels(model)
    bn = 2  # weight and bias per BatchNorm channel (running stats are buffers)
    expected = n_params(model) - ((4 + bn) + 4) - ((4 * 9 + bn) + 10) - ((12 + bn) + 6 + 6 * 9)
    assert n_params(new) == expected
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(new(x), model(x), atol=1e-5, rtol=1e-4)
    assert new.get_submodule(f"{f[4]}.squeeze_bn").running_mean.shape == (3,)


def test_simple_bypass_fires_keep_expand_channels_and_layout():
    torch.manual_seed(2)
    cfg = [(4, 6, 6), (4, 8, 8)] + [(4, 8, 8)] * 6  # fire0 8->12, fire1 12->16, rest 16->16
    model = create_model("squeezenet_cifar", fire_config=cfg, stem_channels=8)
    f = fire_names(model)
    assert [model.get_submodule(n).bypass is not None for n in f] == [False] * 2 + [True] * 6
    norms = channel_norms(model)
    assert norms[f"{f[0]}.expand1x1"].shape == (6,)
    model.eval()
    for c in range(4):  # zero 2 + 2 expand channels of fire0: 12 -> 8 outputs would equal its
        kill(model, f"{f[0]}.expand1x1" if c < 2 else f"{f[0]}.expand3x3", c % 2)  # 8 inputs
    kill(model, f"{f[3]}.expand1x1", 0)  # inside a bypass Fire: left alone
    dead = find_dead_channels(model)
    assert f"{f[3]}.expand1x1" not in dead and f"{f[1]}.expand1x1" not in dead
    new, report = remove_channels(model, dead)
    assert f"{f[1]}.expand3x3" in report.locked and f"{f[3]}.expand1x1" in report.locked
    # One channel is kept back so fire0 does not gain a simple bypass (8 -> 9 outputs).
    assert report.kept_back == {f"{f[0]}.expand3x3": [1]}
    assert report.fire_config[0] == (4, 4, 5)
    assert [new.get_submodule(n).bypass is not None for n in f] == [False] * 2 + [True] * 6
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(new(x), model(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="bypass Fire; its channels stay"):
        remove_channels(model, {f"{f[3]}.expand1x1": [0]})


def test_smallest_channels_and_errors():
    torch.manual_seed(3)
    model = create_model("squeezenet_cifar_e2", num_classes=5, fire_config=CONFIG,
                         stem_channels=8)
    chosen = smallest_channels(model, 0.5)
    norms = channel_norms(model)
    for layer, idx in chosen.items():
        assert len(idx) == round(0.5 * len(norms[layer]))
        rest = [i for i in range(len(norms[layer])) if i not in idx]
        assert norms[layer][idx].max() <= norms[layer][rest].min()
    new, report = remove_channels(model, chosen)
    assert report.fire_config == [(2, 3, 3)] * 8 and report.stem_channels == 4
    assert new(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(ValueError, match=r"outside 0..5"):
        remove_channels(model, {"features.3.expand1x1": [6]})
    with pytest.raises(ValueError, match="not a removable conv"):
        remove_channels(model, {"classifier.1": [0]})
    with pytest.raises(TypeError, match="needs a SqueezeNet model, got Sequential"):
        find_dead_channels(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)))
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\), got 1.5"):
        smallest_channels(model, 1.5)


def test_behind_batchnorm_the_bn_scale_ranks_channels():
    """With BatchNorm after a conv the filter's norm is rescaled away; |gamma| decides."""
    torch.manual_seed(4)
    model = create_model("squeezenet_cifar", num_classes=5, fire_config=CONFIG, stem_channels=8)
    stem_bn = model.get_submodule("features.1")
    with torch.no_grad():
        stem_bn.weight.copy_(torch.tensor([0.9, -0.05, 0.8, 0.7, 0.01, 0.6, 0.5, 0.4]))
        model.get_submodule("features.0").weight[1] *= 100  # a large filter, a small gamma
    scores = channel_importance(model)  # auto: bn_scale where there is a BatchNorm
    assert torch.equal(scores["features.0"], stem_bn.weight.detach().abs())
    assert smallest_channels(model, 0.25)["features.0"] == [1, 4]
    assert 1 not in smallest_channels(model, 0.25, by="filter_norm")["features.0"]
    assert torch.equal(channel_importance(model, "filter_norm")["features.0"],
                       channel_norms(model)["features.0"])
    plain = create_model("squeezenet_cifar_e2", num_classes=5, fire_config=CONFIG,
                         stem_channels=8)  # no BatchNorm: auto falls back to the filter norm
    assert torch.equal(channel_importance(plain)["features.0"], channel_norms(plain)["features.0"])
    with pytest.raises(ValueError, match="needs a BatchNorm after every conv"):
        channel_importance(plain, "bn_scale")
    with pytest.raises(ValueError, match="by must be one of"):
        channel_importance(model, "gradient")
