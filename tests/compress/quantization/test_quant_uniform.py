"""Uniform affine quantization (Jacob et al. 2018, arXiv 1712.05877): exact qparams and codes,
straight-through gradients, observers, post-training quantization and QAT on tiny models."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab import create_model
from squeezelab.compress.quantization.uniform import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    UniformQuantConfig,
    choose_qparams,
    dequantize_affine,
    fake_quantize,
    int_dtype,
    qrange,
    quantize_affine,
    tensor_min_max,
)
from squeezelab.compress.quantization.uniform_ptq import (
    QuantizedConv2d,
    QuantizedLinear,
    quantize_ptq_,
)
from squeezelab.compress.quantization.uniform_qat import (
    QATConv2d,
    QATLinear,
    convert_qat_,
    prepare_qat_,
)


def tiny_squeezenet():
    torch.manual_seed(0)
    return create_model("squeezenet_cifar", fire_config=[(4, 8, 8)] * 8, stem_channels=16).eval()


def test_qrange_and_dtype():
    assert qrange(8, True) == (-128, 127)
    assert qrange(8, False) == (0, 255)
    assert qrange(4, True) == (-8, 7)
    assert int_dtype(8, True) is torch.int8 and int_dtype(8, False) is torch.uint8
    assert int_dtype(12, True) is torch.int16
    with pytest.raises(ValueError, match="num_bits must be an integer in \\[2, 16\\], got 1"):
        qrange(1, True)


def test_choose_qparams_exact_values():
    # asymmetric uint8 over [-1, 3]: scale = 4/255, zero_point = 0 - round(-1 / (4/255)) = 64
    scale, zp = choose_qparams(-1.0, 3.0, num_bits=8, symmetric=False)
    assert scale.item() == pytest.approx(4 / 255, rel=1e-7)
    assert zp.item() == 64 and zp.dtype == torch.int32
    # symmetric int8: scale = max(|-1|, 3) / 127, zero_point 0
    scale, zp = choose_qparams(-1.0, 3.0, num_bits=8, symmetric=True)
    assert scale.item() == pytest.approx(3 / 127, rel=1e-7)
    assert zp.item() == 0
    # the range is widened to contain 0: [2, 4] behaves as [0, 4]
    scale, zp = choose_qparams(2.0, 4.0)
    assert scale.item() == pytest.approx(4 / 255, rel=1e-7) and zp.item() == 0
    # an all-zero range still gives a positive scale
    scale, zp = choose_qparams(0.0, 0.0)
    assert scale.item() > 0 and zp.item() == 0


def test_choose_qparams_rejects_bad_input():
    with pytest.raises(ValueError, match="min_val must be <= max_val"):
        choose_qparams(1.0, -1.0)
    with pytest.raises(ValueError, match="needs a signed integer range"):
        choose_qparams(-1.0, 1.0, symmetric=True, signed=False)
    with pytest.raises(ValueError, match="must be finite"):
        choose_qparams(float("inf"), float("-inf"))


def test_quantize_dequantize_exact_codes():
    scale, zp = choose_qparams(-1.0, 3.0, num_bits=8)
    q = quantize_affine(torch.tensor([-1.0, 0.0, 3.0, 10.0, -5.0]), scale, zp, 8, signed=False)
    assert q.dtype == torch.uint8
    assert q.tolist() == [0, 64, 255, 255, 0]  # 10 and -5 saturate
    r = dequantize_affine(q, scale, zp)
    assert r[1].item() == 0.0  # real zero is exact
    assert r[0].item() == pytest.approx(-64 * 4 / 255, rel=1e-6)


def test_round_trip_error_at_most_half_a_step():
    torch.manual_seed(0)
    x = torch.randn(1000) * 3
    for symmetric in (False, True):
        lo, hi = tensor_min_max(x)
        scale, zp = choose_qparams(lo, hi, 8, symmetric)
        q = quantize_affine(x, scale, zp, 8, signed=symmetric)
        err = (dequantize_affine(q, scale, zp) - x).abs().max()
        assert err <= scale / 2 * (1 + 1e-5)


def test_per_channel_differs_from_per_tensor():
    w = torch.stack([torch.linspace(-0.01, 0.01, 9), torch.linspace(-5, 5, 9)])  # (2, 9)
    lo, hi = tensor_min_max(w, axis=0)
    assert lo.tolist() == pytest.approx([-0.01, -5.0]) and hi.tolist() == pytest.approx([0.01, 5.0])
    s_ch, z_ch = choose_qparams(lo, hi, 8, symmetric=True)
    s_t, z_t = choose_qparams(w.min(), w.max(), 8, symmetric=True)
    assert s_ch.shape == (2,) and s_t.shape == ()
    assert s_ch[0] < s_t and s_ch[1] == pytest.approx(s_t.item())
    per_ch = dequantize_affine(quantize_affine(w, s_ch, z_ch, 8, True, axis=0), s_ch, z_ch, axis=0)
    per_t = dequantize_affine(quantize_affine(w, s_t, z_t, 8, True), s_t, z_t)
    # the small row is all zeros per tensor, and almost exact per channel
    assert per_t[0].abs().max() == 0
    assert (per_ch[0] - w[0]).abs().max() <= s_ch[0] / 2 * (1 + 1e-5)


def test_fake_quantize_matches_torch_and_has_ste_mask():
    x = torch.tensor([-2.0, -0.5, 0.25, 0.5, 2.0], requires_grad=True)
    scale, zp = choose_qparams(-1.0, 1.0, 8, symmetric=True)
    y = fake_quantize(x, scale, zp, 8, signed=True)
    expected = torch.fake_quantize_per_tensor_affine(x.detach(), scale.item(), 0, -128, 127)
    assert torch.equal(y.detach(), expected)
    y.sum().backward()
    # -2 and 2 saturate (-2 / (1/127) = -254 < -128): gradient 0 there, 1 inside the range
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_fake_quantize_per_channel_matches_torch():
    torch.manual_seed(1)
    w = torch.randn(4, 3, 2, 2)
    lo, hi = tensor_min_max(w, 0)
    scale, zp = choose_qparams(lo, hi, 8, symmetric=True)
    y = fake_quantize(w, scale, zp, 8, True, axis=0)
    expected = torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -128, 127)
    assert torch.allclose(y, expected, atol=0, rtol=1e-6)


def test_observers_exact():
    obs = MinMaxObserver()
    assert not obs.initialized
    obs(torch.tensor([-1.0, 1.0]))
    obs(torch.tensor([-3.0, 0.5]))
    assert (obs.min_val.item(), obs.max_val.item()) == (-3.0, 1.0)
    ema = MovingAverageMinMaxObserver(averaging_constant=0.5)
    ema(torch.tensor([-1.0, 1.0]))  # first batch taken as is
    ema(torch.tensor([-3.0, 5.0]))  # -1 + 0.5 * (-3 + 1) = -2, 1 + 0.5 * (5 - 1) = 3
    assert (ema.min_val.item(), ema.max_val.item()) == (-2.0, 3.0)
    per_ch = MinMaxObserver(axis=1)
    per_ch(torch.tensor([[1.0, -2.0], [3.0, 0.0]]))
    assert per_ch.min_val.tolist() == [1.0, -2.0] and per_ch.max_val.tolist() == [3.0, 0.0]
    scale, zp = per_ch.qparams(8, symmetric=True)
    assert scale.tolist() == pytest.approx([3 / 127, 2 / 127])
    with pytest.raises(ValueError, match="averaging_constant must be in \\(0, 1\\], got 0"):
        MovingAverageMinMaxObserver(0.0)


def test_config_validation():
    with pytest.raises(ValueError, match="observer must be one of"):
        UniformQuantConfig(observer="histogram")
    with pytest.raises(ValueError, match="activation_num_bits must be an integer"):
        UniformQuantConfig(activation_num_bits=1)
    with pytest.raises(ValueError, match="UniformQuantConfig: unknown key 'num_bit'"):
        UniformQuantConfig.from_dict({"num_bit": 8})


def test_quantized_linear_is_exact_integer_arithmetic():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.0, -0.5]]))
        lin.bias.copy_(torch.tensor([0.1, -0.2]))
    cfg = UniformQuantConfig()
    in_scale, in_zp = choose_qparams(-1.0, 2.0, 8)
    q = QuantizedLinear(lin, cfg, (in_scale, in_zp))
    assert q.weight_int.dtype == torch.int8
    # symmetric per channel: row 0 scale 1/127 -> [64, -127, 32]; row 1 scale 2/127 -> [127, 0, -32]
    assert q.weight_int.tolist() == [[64, -127, 32], [127, 0, -32]]
    x = torch.tensor([[0.3, -0.7, 1.9], [1.5, 0.0, -1.0]])  # inside the calibrated [-1, 2]
    # the reference computation in int64, by hand
    xq = torch.clamp(torch.round(x / in_scale) + in_zp, 0, 255).long() - int(in_zp)
    acc = xq @ q.weight_int.long().T + q.bias_int.long()
    expected = acc.double() * (in_scale.double() * q.weight_scale.double())
    assert torch.allclose(q(x).double(), expected, rtol=1e-6, atol=0)
    assert torch.allclose(q(x), lin(x), atol=0.03)
    # 6 weights at 8 bits + 2 scales/zero points (8 bytes) + 2 int32 biases
    assert q.size_bytes() == 6 + 16 + 8


def test_ptq_tiny_model_close_to_fp32():
    model = tiny_squeezenet()
    torch.manual_seed(1)
    x = torch.randn(8, 3, 32, 32)
    ref = model(x)
    fp32_weights = {n: m.weight.detach().clone() for n, m in model.named_modules()
                    if isinstance(m, nn.Conv2d)}
    report = quantize_ptq_(model, UniformQuantConfig(), [x[:4], (x[4:], torch.zeros(4))])
    assert set(report) == set(fp32_weights)
    out = model(x)
    assert ((out - ref).norm() / ref.norm()).item() < 0.05
    for name, module in model.named_modules():
        if name in fp32_weights:
            assert isinstance(module, QuantizedConv2d) and module.weight_int.dtype == torch.int8
            err = (module.dequantized_weight() - fp32_weights[name]).abs()
            assert (err <= module.weight_scale.reshape(-1, 1, 1, 1) / 2 * (1 + 1e-5)).all()
    # the model really holds integer weights: no float conv weight is left in the state dict
    state = model.state_dict()
    assert not any(k.endswith(".weight") and v.dim() == 4 for k, v in state.items())
    assert sum(v.dtype == torch.int8 for v in state.values()) == len(fp32_weights)
    # weights are 4x smaller than fp32 (plus scales)
    total = sum(r["size_bytes"] for r in report.values())
    assert total < 0.4 * sum(r["fp32_bytes"] for r in report.values())


def test_ptq_weight_only_and_calibration_errors():
    model = tiny_squeezenet()
    with pytest.raises(ValueError, match="calibration_batches is empty"):
        quantize_ptq_(copy.deepcopy(model), UniformQuantConfig(), [])
    with pytest.raises(ValueError, match="calibration batches must be tensors"):
        quantize_ptq_(copy.deepcopy(model), UniformQuantConfig(), ["not a tensor"])
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    report = quantize_ptq_(
        model, UniformQuantConfig(activation_num_bits=None, layers=["classifier.*"]))
    assert list(report) == ["classifier.1"]
    assert isinstance(model.classifier[1], QuantizedConv2d)
    assert ((model(x) - ref).norm() / ref.norm()).item() < 0.02


def test_moving_average_observer_for_calibration():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    batches = [torch.full((1, 4), 1.0), torch.full((1, 4), 3.0)]
    quantize_ptq_(model, UniformQuantConfig(observer="moving_average", averaging_constant=0.5),
                  batches)
    # first layer input range: batch 1 -> [0, 1] (widened to 0), batch 2 -> [0, 0 + ...]:
    # max 1 + 0.5 * 2 = 2
    assert model[0].input_scale.item() == pytest.approx(2.0 / 255)


def test_qat_trains_and_converts():
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    params_before = list(model.parameters())
    names = prepare_qat_(model, UniformQuantConfig())
    assert names == ["0", "2"]
    assert isinstance(model[0], QATLinear) and isinstance(model[2], QATLinear)
    assert all(a is b for a, b in zip(model.parameters(), params_before))  # same shadow weights
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    model.train()
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    model.eval()
    qat_out = model(x)
    report = convert_qat_(model)
    assert set(report) == {"0", "2"} and isinstance(model[0], QuantizedLinear)
    # the integer model computes what QAT simulated (up to float rounding at code boundaries)
    assert ((model(x) - qat_out).norm() / qat_out.norm()).item() < 1e-2
    with pytest.raises(ValueError, match="has no QAT layer"):
        convert_qat_(model)


def test_qat_conv_weights_are_fake_quantized_with_ste():
    model = tiny_squeezenet()
    prepare_qat_(model, UniformQuantConfig(layers=["features.0"]))
    conv = model.features[0]
    assert isinstance(conv, QATConv2d)
    wq = conv.fake_quantized_weight()
    scale = conv.weight.detach().abs().reshape(16, -1).amax(1) / 127
    assert (wq - conv.weight).abs().max() <= scale.max() / 2 * (1 + 1e-5)
    assert not torch.equal(wq, conv.weight)
    wq.sum().backward()
    # symmetric: nothing saturates
    assert torch.equal(conv.weight.grad, torch.ones_like(conv.weight))
    with pytest.raises(ValueError, match="already prepared"):
        prepare_qat_(model, UniformQuantConfig(layers=["features.0"]))
