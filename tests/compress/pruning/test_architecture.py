"""Architecture learning's compression side: gates that change nothing until trained, the cut
that turns rounded gates into a smaller ordinary SqueezeNet exactly, the conv algebra behind
merging linear layers (and where zero padding breaks it), gated checkpoints that load."""
import pytest
import torch
import torch.nn.functional as F

from squeezelab.checkpoint import save_checkpoint
from squeezelab.compress.format.checkpoints import load_compressible
from squeezelab.compress.pruning.architecture import (
    channel_costs,
    compose_1x1_then_conv,
    compose_conv_then_1x1,
    cut_architecture,
    gate_modules,
    gate_scales,
    gateable_layers,
    install_gates_,
    round_gates_,
    widths_table,
)
from squeezelab.layers.tsrelu import TsReLU
from squeezelab.models import create_model

TINY = {"fire_config": [[4, 8, 8], [4, 8, 8], [8, 16, 16], [8, 16, 16],
                        [8, 16, 16], [8, 16, 16], [8, 24, 24], [8, 24, 24]],
        "stem_channels": 12}  # 12 -> 16 at the first Fire: no bypass there, the stem is free


def model(**kwargs):
    torch.manual_seed(0)
    net = create_model("squeezenet_cifar", **{**TINY, **kwargs}).eval()
    for m in net.modules():  # BatchNorm statistics away from the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
    return net


# ------------------------------------------------------------------------------ the algebra


def test_a_1x1_after_a_kxk_conv_is_one_kxk_conv_exactly():
    torch.manual_seed(0)
    w1, b1 = torch.randn(5, 3, 3, 3), torch.randn(5)
    w2, b2 = torch.randn(4, 5, 1, 1), torch.randn(4)
    x = torch.randn(2, 3, 9, 9)
    w, b = compose_conv_then_1x1(w1, b1, w2, b2)
    expected = F.conv2d(F.conv2d(x, w1, b1, padding=1), w2, b2)
    assert torch.allclose(F.conv2d(x, w, b, padding=1), expected, atol=1e-4)


def test_a_kxk_after_a_1x1_is_one_conv_without_bias_or_padding_but_not_at_padded_borders():
    torch.manual_seed(0)
    w1, b1 = torch.randn(5, 3, 1, 1), torch.randn(5)
    w2, b2 = torch.randn(4, 5, 3, 3), torch.randn(4)
    x = torch.randn(2, 3, 9, 9)
    # no padding: exact with the bias
    w, b = compose_1x1_then_conv(w1, b1, w2, b2, padding=0)
    assert torch.allclose(F.conv2d(x, w, b), F.conv2d(F.conv2d(x, w1, b1), w2, b2), atol=1e-4)
    # zero padding without a bias: exact
    w, b = compose_1x1_then_conv(w1, None, w2, b2, padding=1)
    assert torch.allclose(F.conv2d(x, w, b, padding=1),
                          F.conv2d(F.conv2d(x, w1), w2, b2, padding=1), atol=1e-4)
    # zero padding with a bias: refused, and rightly: the interior agrees, the border not
    with pytest.raises(ValueError, match="padding zeros replace the bias at the borders"):
        compose_1x1_then_conv(w1, b1, w2, b2, padding=1)
    w, b = compose_1x1_then_conv(w1, b1, w2, b2, padding=0)
    merged = F.conv2d(x, w, b, padding=1)
    original = F.conv2d(F.conv2d(x, w1, b1), w2, b2, padding=1)
    assert torch.allclose(merged[..., 1:-1, 1:-1], original[..., 1:-1, 1:-1], atol=1e-4)
    assert not torch.allclose(merged[..., 0, :], original[..., 0, :], atol=1e-2)


# ------------------------------------------------------------------------------ gates


def test_gates_go_where_channels_can_be_removed_and_change_nothing():
    net = model()
    # a simple bypass around every Fire of equal widths locks the expands: the stem and the
    # squeezes are gated
    assert list(gateable_layers(net)) == ["features.0"] + [
        f"features.{i}.squeeze" for i in (4, 5, 6, 8, 9, 10, 11, 13)]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
    installed = install_gates_(net)
    assert installed["features.0"] == "features.2"
    assert installed["features.4.squeeze"] == "features.4.squeeze_activation"
    assert all(isinstance(m, TsReLU) for m in gate_modules(net).values())
    with torch.no_grad():
        assert torch.allclose(net(x), before, atol=1e-6)
    with pytest.raises(ValueError, match="already a TsReLU"):
        install_gates_(net, ["features.0"])
    # without a bypass the expands are gated too
    plain = model(bypass="none")
    assert "features.4.expand3x3" in gateable_layers(plain)
    with pytest.raises(ValueError, match="are not gateable layers"):
        install_gates_(plain, ["classifier.1"])


def test_channel_costs_count_filter_batchnorm_and_consumer_slices():
    net = model()
    costs = channel_costs(net)
    # features.4.squeeze: 12 inputs (the stem's), no bias (BatchNorm), 2 BatchNorm entries;
    # read by expand1x1 (8 outputs, 1x1) and expand3x3 (8 outputs, 3x3)
    assert costs["features.4.squeeze_activation"].tolist() == [12 + 2 + 8 + 8 * 9] * 4
    # the stem: 3x3x3 filter, 2 BatchNorm entries, read by the first squeeze (4 outputs, 1x1)
    assert costs["features.2"].tolist() == [27 + 2 + 4] * 12


def set_gates(net, w_by_layer, d_by_layer=None):
    gates = gate_modules(net)
    paths = gateable_layers(net)
    with torch.no_grad():
        for layer, w in w_by_layer.items():
            gates[paths[layer]].gate_w.copy_(torch.tensor(w))
        for layer, d in (d_by_layer or {}).items():
            gates[paths[layer]].gate_d.fill_(d)


def test_cut_removes_channels_whose_gate_is_zero_and_folds_the_rest_exactly():
    net = model()
    install_gates_(net)
    set_gates(net, {"features.0": [0.0] * 4 + [0.9, 0.7] + [1.0] * 6,
                    "features.8.squeeze": [0.0, 0.0, 0.6, 1.0, 0.0, 1.0, 1.0, 0.55],
                    "features.13.squeeze": [1.0] * 7 + [0.0]})
    x = torch.randn(3, 3, 32, 32)
    new, report = cut_architecture(net)
    assert report.exact
    with torch.no_grad():
        assert torch.allclose(new(x), net(x), atol=1e-5)
    rows = {r["layer"]: r for r in report.layers}
    assert (rows["features.0"]["original_width"], rows["features.0"]["learned_width"]) == (12, 8)
    assert rows["features.8.squeeze"]["removed"] == [0, 1, 4]
    assert rows["features.13.squeeze"]["learned_width"] == 7
    assert rows["features.8.squeeze"]["smallest_kept_w"] == pytest.approx(0.55)
    assert report.stem_channels == 8
    assert report.fire_config[3] == (5, 16, 16) and report.fire_config[7] == (7, 24, 24)
    assert report.params_after < report.params_before
    assert not gate_modules(new)  # an ordinary SqueezeNet
    table = widths_table(report)
    assert table.splitlines()[0].split() == ["layer", "original", "learned", "linear"]
    assert "features.8.squeeze" in table


def test_cut_rounds_at_the_threshold_and_says_how_far_from_exact():
    net = model()
    install_gates_(net)
    set_gates(net, {"features.5.squeeze": [0.3, 1.0, 1.0, 1.0]}, {"features.9.squeeze": 0.8,
                                                                  "features.10.squeeze": 0.2})
    new, report = cut_architecture(net)
    rows = {r["layer"]: r for r in report.layers}
    assert rows["features.5.squeeze"]["removed"] == [0]
    assert rows["features.5.squeeze"]["largest_removed_w"] == pytest.approx(0.3)
    assert rows["features.9.squeeze"]["linear"] and not rows["features.10.squeeze"]["linear"]
    assert "remove the bottleneck" in rows["features.9.squeeze"]["merge"]
    assert rows["features.10.squeeze"]["merge"] is None
    assert not report.exact
    # the rounded gated model is the cut one where no layer is linear
    net2 = model()
    install_gates_(net2)
    set_gates(net2, {"features.5.squeeze": [0.3, 1.0, 1.0, 1.0]}, {"features.10.squeeze": 0.2})
    cut, _ = cut_architecture(net2)
    round_gates_(net2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(cut(x), net2(x), atol=1e-5)
    with pytest.raises(ValueError, match="has no TsReLU gates"):
        cut_architecture(model())


def test_a_floor_keeps_each_layers_widest_open_channels_and_folds_them_exactly():
    net = model()
    install_gates_(net)
    # every gate of a squeeze below the threshold: without a floor the layer would be cut to
    # the one channel channel removal keeps back, with its w folded to 0
    set_gates(net, {"features.8.squeeze": [0.0, 0.2, 0.0, 0.4, 0.1, 0.0, 0.3, 0.0],
                    "features.5.squeeze": [0.0, 1.0, 0.0, 0.0]})
    new, report = cut_architecture(net, min_width=0.25)
    rows = {r["layer"]: r for r in report.layers}
    # 8 channels, a quarter: the two largest gates (0.4 at 3, 0.3 at 6) stay, w folded in
    assert rows["features.8.squeeze"]["learned_width"] == 2
    assert rows["features.8.squeeze"]["removed"] == [0, 1, 2, 4, 5, 7]
    assert rows["features.8.squeeze"]["smallest_kept_w"] == pytest.approx(0.3)
    assert rows["features.5.squeeze"]["learned_width"] == 1  # ceil(4 / 4): gate 1, above 0.5
    assert report.fire_config[3][0] == 2
    # the floor keeps channels that rounding would remove, so the cut equals the gated model
    # with only the removed gates zeroed
    gates = gate_modules(net)
    with torch.no_grad():
        gates[gateable_layers(net)["features.8.squeeze"]].gate_w[[1, 4]] = 0.0
    new, report = cut_architecture(net, min_width=0.25)
    assert report.exact
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(new(x), net(x), atol=1e-5)
    with pytest.raises(ValueError, match=r"min_width must be in \[0, 1\)"):
        cut_architecture(net, min_width=1.0)


def test_merge_reason_for_the_stem_names_the_max_pool():
    net = model()
    install_gates_(net)
    set_gates(net, {}, {"features.0": 1.0})
    _, report = cut_architecture(net)
    stem = next(r for r in report.layers if r["layer"] == "features.0")
    assert stem["linear"] and "a max-pool follows the stem" in stem["merge"]


def test_a_gated_checkpoint_loads_with_its_gates(tmp_path):
    net = model()
    install_gates_(net)
    set_gates(net, {"features.8.squeeze": [0.0, 0.25, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0]})
    path = save_checkpoint(tmp_path / "gated", net, meta={})
    back = load_compressible(path).model
    assert set(gate_modules(back)) == set(gate_modules(net))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(x), net(x))


def test_gate_scales_are_the_batchnorm_scales_before_the_gates():
    net = model()
    install_gates_(net, ["features.0", "features.8.squeeze"])
    scales = gate_scales(net)
    assert list(scales) == ["features.2", "features.8.squeeze_activation"]
    assert scales["features.2"] is net.features[1].weight
    assert scales["features.8.squeeze_activation"] is net.features[8].squeeze_bn.weight
