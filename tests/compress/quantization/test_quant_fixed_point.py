"""Fixed point and dynamic fixed point (arXiv 1412.7024, Ristretto arXiv 1605.06402): exact
rounding and saturation, the fractional-length rule, and the layer transform."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from squeezelab.compress.quantization.fixed_point import (
    FixedPointConfig,
    FixedPointLinear,
    choose_frac_bits,
    fixed_point_,
    fixed_point_codes,
    frac_bits_tensor,
    to_fixed_point,
)


def test_exact_rounding_and_saturation():
    x = torch.tensor([0.3, -0.3, 3.0, -3.0, 1 / 128])
    # 8 bits, 6 fractional: step 1/64, range [-128/64, 127/64] = [-2, 1.984375]
    # 1/128 is half an LSB: it rounds to even, 0
    assert to_fixed_point(x, 8, 6).tolist() == [19 / 64, -19 / 64, 127 / 64, -2.0, 0.0]
    assert fixed_point_codes(x, 8, 6).tolist() == [19, -19, 127, -128, 0]
    # negative fractional length: steps of 4
    assert to_fixed_point(torch.tensor([9.0, 10.0, 1000.0]), 4, -2).tolist() == [8.0, 8.0, 28.0]
    with pytest.raises(ValueError, match="total_bits must be an integer in \\[2, 32\\], got 1"):
        to_fixed_point(x, 1, 0)


def test_straight_through_gradient_masks_saturated_values():
    x = torch.tensor([0.3, 2.5, -1.0, -2.5], requires_grad=True)
    to_fixed_point(x, 8, 6).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "values, expected",
    [
        ([0.5, -1.0], 7),  # -1 * 2^7 = -128 fits; 0.5 * 2^7 = 64 fits
        ([1.0], 6),  # 1 * 2^7 = 128 > 127 would saturate
        ([127 / 128], 7),
        ([100.0], 0),
        ([0.01], 13),  # 0.01 * 2^13 = 81.9, 0.01 * 2^14 = 163.8 > 127
        ([1000.0, -5.0], -3),  # 1000 / 8 = 125
        ([0.0, 0.0], 7),
    ],
)
def test_choose_frac_bits(values, expected):
    x = torch.tensor(values)
    assert choose_frac_bits(x, 8) == expected
    f = frac_bits_tensor(x, 8)
    assert f.dtype == torch.int64 and f.item() == expected
    # the chosen length never saturates, and one more fractional bit would (unless all zero)
    q = fixed_point_codes(x, 8, expected).double()
    assert torch.allclose(q * 2.0**-expected, x.double(), atol=2.0 ** (-expected - 1))
    if any(values):
        raw = torch.round(x.double() * 2.0 ** (expected + 1))
        assert ((raw > 127) | (raw < -128)).any()


def test_dynamic_fixed_point_transform_picks_a_length_per_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].weight.mul_(0.01)
        model[2].weight.mul_(10.0)
    report = fixed_point_(model, FixedPointConfig(total_bits=8))
    assert report["0"]["frac_bits"] == choose_frac_bits(model[0].weight, 8)
    assert report["2"]["frac_bits"] == choose_frac_bits(model[2].weight, 8)
    assert report["0"]["frac_bits"] > report["2"]["frac_bits"] + 5
    assert report["0"]["num_saturated"] == report["2"]["num_saturated"] == 0
    assert isinstance(model[0], FixedPointLinear)
    x = torch.randn(5, 4)
    w = to_fixed_point(model[0].weight, 8, report["0"]["frac_bits"])
    assert torch.equal(model[0](x), F.linear(x, w, model[0].bias))
    # in training the length follows the weights: 4x larger weights -> 2 fewer fractional bits
    before = int(model[0].frac_bits)
    with torch.no_grad():
        model[0].weight.mul_(4.0)
    model.train()
    model(x)
    assert int(model[0].frac_bits) == before - 2


def test_static_fixed_point_saturates_and_reports_it():
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.3, 5.0], [-0.1, -9.0]]))
    report = fixed_point_(model, FixedPointConfig(total_bits=8, dynamic=False, frac_bits=6))
    assert report["0"] == {"total_bits": 8, "frac_bits": 6, "num_saturated": 2}
    assert model[0].fixed_point_weight().tolist() == [[19 / 64, 127 / 64], [-6 / 64, -2.0]]
    with pytest.raises(ValueError, match="already fixed point"):
        fixed_point_(model, FixedPointConfig())


def test_config_errors():
    with pytest.raises(ValueError, match="needs frac_bits"):
        FixedPointConfig(dynamic=False)
    with pytest.raises(ValueError, match="frac_bits must be None with dynamic=True"):
        FixedPointConfig(frac_bits=4)
    with pytest.raises(ValueError, match="total_bits must be an integer"):
        FixedPointConfig(total_bits=0)
    with pytest.raises(ValueError, match="layers must be a list of glob strings"):
        FixedPointConfig(layers="features.*")
