"""BatchNorm folding: same eval outputs, zeros kept, one bias per channel instead of four."""
import pytest
import torch
import torch.nn as nn
from model_configs import TINY

from squeezelab import create_model
from squeezelab.compress.fold import fold_batchnorm, fold_conv_bn
from squeezelab.compress.pruning.magnitude import PruneConfig, prune_
from squeezelab.models import model_spec


def with_random_batchnorm_stats(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def test_fold_conv_bn_by_hand():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    bn = with_random_batchnorm_stats(nn.Sequential(nn.BatchNorm2d(3)))[0]
    weight, bias = fold_conv_bn(conv, bn)
    x = torch.randn(2, 2, 5, 5)
    with torch.no_grad():
        ref = bn(conv(x))
    assert torch.allclose(nn.functional.conv2d(x, weight, bias, padding=1), ref, atol=1e-5)


@pytest.mark.parametrize("name", ["squeezenet_cifar", "squeezenet_cifar_wide"])
def test_folded_model_matches_and_keeps_zeros(name):
    torch.manual_seed(0)
    model = with_random_batchnorm_stats(create_model(name, **TINY))
    prune_(model, PruneConfig(sparsity=0.5))
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert model_spec(folded)["kwargs"]["batch_norm"] is False
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded.eval()(x), model(x), atol=1e-4, rtol=1e-4)
    zeros = lambda m: sum(int((c.weight == 0).sum()) for c in m.modules()
                          if isinstance(c, nn.Conv2d))
    assert zeros(folded) == zeros(model)
    # four BatchNorm tensors per channel become one bias per channel
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    params = lambda m: sum(p.numel() for p in m.parameters())
    assert params(folded) == params(model) - bn_channels  # gamma+beta -> bias


def test_model_without_batchnorm_is_refused():
    with pytest.raises(ValueError, match="has no BatchNorm layers to fold"):
        fold_batchnorm(create_model("squeezenet_cifar_e4"))
