"""The tri-state ReLU: w x above zero, w d x below, a ReLU at w = 1, d = 0."""
import pytest
import torch

from squeezelab.layers.tsrelu import TsReLU


def test_tsrelu_is_w_x_above_zero_and_w_d_x_below():
    g = TsReLU(2)
    x = torch.tensor([[[[-2.0, 3.0]], [[4.0, -1.0]]]])  # (1, 2, 1, 2)
    assert torch.equal(g(x), torch.relu(x))  # w = 1, d = 0: a ReLU
    with torch.no_grad():
        g.gate_w.copy_(torch.tensor([0.5, 0.0]))
        g.gate_d.fill_(0.25)
    expected = torch.tensor([[[[0.5 * 0.25 * -2.0, 0.5 * 3.0]], [[0.0, 0.0]]]])
    assert torch.allclose(g(x), expected)
    with torch.no_grad():
        g.gate_w.fill_(1.0)
        g.gate_d.fill_(1.0)
    assert torch.equal(g(x), x)  # d = 1: linear


def test_tsrelu_gradients_reach_both_gates():
    g = TsReLU(3, w=0.8, d=0.1)
    x = torch.randn(4, 3, 5, 5)
    g(x).sum().backward()
    # d/dw_c = sum over the channel of relu(x) + d min(x, 0); d/dd = sum of w min(x, 0)
    per_channel = (torch.relu(x) + 0.1 * torch.clamp(x, max=0)).sum(dim=(0, 2, 3))
    assert torch.allclose(g.gate_w.grad, per_channel, rtol=1e-5)
    assert float(g.gate_d.grad) == pytest.approx(float(0.8 * torch.clamp(x, max=0).sum()),
                                                 rel=1e-5)


def test_tsrelu_checks_its_input():
    with pytest.raises(ValueError, match="num_channels must be a positive integer"):
        TsReLU(0)
    with pytest.raises(ValueError, match=r"d must be in \[0, 1\]"):
        TsReLU(2, d=1.5)
    with pytest.raises(ValueError, match="TsReLU over 2 channels got an input of shape"):
        TsReLU(2)(torch.zeros(1, 3, 2, 2))
