"""BinaryConnect (arXiv 1511.00363) and XNOR-Net (arXiv 1603.05279): the sign convention, the
straight-through gradient, alpha and K computed by hand, clipping, and the model transform."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab import create_model
from squeezelab.compress.quantization.binary import (
    BinaryClipHook,
    BinaryConfig,
    BinaryConv2d,
    BinaryLinear,
    binarize_,
    binarize_weight,
    binary_input_scale,
    clip_binary_weights_,
    xnor_alpha,
    xnor_conv2d,
    xnor_linear,
)
from squeezelab.compress.quantization.ste import binary_sign, sign_ste
from squeezelab.hooks import TrainState


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))


def test_sign_of_zero_is_plus_one():
    x = torch.tensor([-2.0, -1e-8, -0.0, 0.0, 3.0])
    assert binary_sign(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]


def test_sign_ste_gradient_is_clipped_to_unit_interval():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.7, 1.0, 1.2], requires_grad=True)
    y = sign_ste(x)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    (y * torch.arange(1.0, 7.0)).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 0.0]


def test_xnor_alpha_on_a_hand_made_filter():
    w = torch.tensor([[1.0, -2.0, 3.0, -4.0], [0.0, 0.5, -0.5, 1.0]]).reshape(2, 1, 2, 2)
    assert xnor_alpha(w).tolist() == [2.5, 0.5]
    wb = binarize_weight(w, "xnor")
    expected = torch.tensor([[2.5, -2.5, 2.5, -2.5], [0.5, 0.5, -0.5, 0.5]]).reshape(2, 1, 2, 2)
    assert torch.equal(wb, expected)
    assert torch.equal(binarize_weight(w, "binaryconnect"), binary_sign(w))
    with pytest.raises(ValueError, match="method must be one of"):
        binarize_weight(w, "ternary")


def test_xnor_weight_gradient_flows_through_alpha_and_sign():
    w = torch.tensor([[0.5, -2.0]], requires_grad=True)
    binarize_weight(w, "xnor").sum().backward()
    # sum = alpha * (s0 + s1) with alpha = (|w0| + |w1|) / 2 = 1.25 and s = (+1, -1): the alpha
    # term is (s0 + s1) * dalpha/dw = 0; the sign term is alpha * STE, which passes |w0| <= 1 only.
    assert w.grad.tolist() == [[1.25, 0.0]]


def _hand_xnor_conv(x, w, bias, padding):
    """XNOR-Net convolution with explicit loops: alpha * K * sum(sign(I) * sign(W)) over the
    window."""
    n, c, h, wd = x.shape
    out_c, _, kh, kw = w.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    sp = F.pad(binary_sign(x), (padding, padding, padding, padding))  # padding after the sign
    a = xp.abs().mean(dim=1)  # (N, H+2p, W+2p); padded zeros count in the box mean
    oh, ow = h + 2 * padding - kh + 1, wd + 2 * padding - kw + 1
    out = torch.zeros(n, out_c, oh, ow, dtype=torch.float64)
    for b in range(n):
        for o in range(out_c):
            alpha = w[o].abs().mean().item()
            sw = binary_sign(w[o])
            for i in range(oh):
                for j in range(ow):
                    k = a[b, i:i + kh, j:j + kw].mean().item()
                    dot = (sp[b, :, i:i + kh, j:j + kw] * sw).sum().item()
                    out[b, o, i, j] = alpha * k * dot + bias[o].item()
    return out


def test_xnor_net_conv_equals_hand_computation():
    torch.manual_seed(3)
    x = torch.randn(2, 3, 5, 5)
    x[0, :, 2, 2] = 0.0  # zeros take sign +1
    w = torch.randn(4, 3, 3, 3)
    bias = torch.randn(4)
    got = xnor_conv2d(x, w, bias, stride=(1, 1), padding=(1, 1))
    expected = _hand_xnor_conv(x, w, bias, padding=1)
    assert got.shape == (2, 4, 5, 5)
    assert torch.allclose(got.double(), expected, atol=1e-5)
    k = binary_input_scale(x, (3, 3), padding=(1, 1))
    assert k.shape == (2, 1, 5, 5)
    assert k[1, 0, 0, 0].item() == pytest.approx(
        x[1, :, :2, :2].abs().mean(0).sum().item() / 9, rel=1e-6)


def test_xnor_net_linear_equals_hand_computation():
    x = torch.tensor([[1.0, -2.0, 0.0], [-0.5, -0.5, 3.0]])
    w = torch.tensor([[1.0, 1.0, -1.0], [2.0, -4.0, 0.0]])
    b = torch.tensor([0.5, -1.0])
    # sign(x) = [[1,-1,1], [-1,-1,1]]; sign(w) = [[1,1,-1], [1,-1,1]]; alpha = [1, 2]
    # K = mean|x| = [1, 4/3]; dots: row0 = [-1, 3], row1 = [-3, 1]
    expected = torch.tensor([[-1 * 1 * 1 + 0.5, 3 * 1 * 2 - 1.0],
                             [-3 * (4 / 3) * 1 + 0.5, 1 * (4 / 3) * 2 - 1.0]])
    assert torch.allclose(xnor_linear(x, w, b), expected)


def test_binarize_keeps_first_and_last_by_default():
    model = mlp()
    report = binarize_(model, BinaryConfig(method="binaryconnect"))
    assert list(report) == ["2"]
    assert type(model[0]) is nn.Linear and type(model[4]) is nn.Linear
    assert isinstance(model[2], BinaryLinear)
    # 20 weights at one bit + 4 fp32 biases; binaryconnect has no alpha
    assert report["2"] == {"method": "binaryconnect", "size_bits": 20 + 4 * 32,
                           "fp32_bits": 24 * 32}
    x = torch.randn(3, 5)
    assert torch.equal(model[2](x), F.linear(x, binary_sign(model[2].weight), model[2].bias))
    all_layers = mlp()
    report = binarize_(all_layers, BinaryConfig(method="xnor", keep_first_last=False))
    assert list(report) == ["0", "2", "4"]
    with pytest.raises(ValueError, match="already binarized"):
        binarize_(all_layers, BinaryConfig(keep_first_last=False))


def test_binaryconnect_trains_with_clipped_shadow_weights():
    model = mlp()
    shadow = model[2].weight
    binarize_(model, BinaryConfig(method="binaryconnect"))
    assert model[2].weight is shadow and model[2].clip_weights
    opt = torch.optim.SGD(model.parameters(), lr=10.0)
    x, y = torch.randn(16, 6), torch.randint(0, 2, (16,))
    hook = BinaryClipHook()
    state = TrainState(model=model, optimizer=opt, config=None, device=torch.device("cpu"))
    for _ in range(3):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        assert model[2].weight.grad is not None and model[2].weight.grad.abs().sum() > 0
        opt.step()
        hook.after_step(state)
        assert model[2].weight.abs().max() <= 1.0
    # the real-valued first layer is not clipped
    assert model[0].weight.abs().max() > 1.0


def test_clip_only_where_configured():
    model = mlp()
    binarize_(model, BinaryConfig(method="xnor", keep_first_last=False))
    with torch.no_grad():
        model[2].weight.mul_(100)
    assert clip_binary_weights_(model) == 0  # XNOR-Net does not clip by default
    assert model[2].weight.abs().max() > 1
    model2 = mlp()
    binarize_(model2, BinaryConfig(method="xnor", clip_weights=True, keep_first_last=False))
    with torch.no_grad():
        model2[2].weight.mul_(100)
    assert clip_binary_weights_(model2, bound=0.5) == 3
    assert model2[2].weight.abs().max() == 0.5
    with pytest.raises(ValueError, match="bound must be > 0, got 0"):
        clip_binary_weights_(model2, bound=0)


def test_xnor_net_on_a_tiny_squeezenet():
    torch.manual_seed(0)
    model = create_model("squeezenet_cifar", fire_config=[(4, 8, 8)] * 8, stem_channels=16)
    report = binarize_(model, BinaryConfig(method="xnor_net"))
    assert "features.0" not in report and "classifier.1" not in report
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert len(convs) == len(report) == 24  # 8 Fire modules x 3 convs
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(m.weight.grad is not None for m in convs)
    # one bit per weight plus one fp32 alpha per filter
    squeeze = model.features[4].squeeze
    assert report["features.4.squeeze"]["size_bits"] == squeeze.weight.numel() + 32 * 4


def test_config_errors():
    with pytest.raises(ValueError, match="method must be one of .* got 'xnor-net'"):
        BinaryConfig(method="xnor-net")
    with pytest.raises(ValueError, match="layer glob 'features.99' matches no"):
        binarize_(mlp(), BinaryConfig(layers=["features.99"]))
    with pytest.raises(ValueError, match="leaves no Conv2d/Linear"):
        binarize_(nn.Sequential(nn.Linear(2, 2)), BinaryConfig())
