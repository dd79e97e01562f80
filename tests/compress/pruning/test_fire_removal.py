"""Layer pruning: Fires with equal input and output widths replaced by the identity, exactly."""
from __future__ import annotations

import types

import pytest
import torch

from squeezelab.checkpoint import model_from_checkpoint, save_checkpoint
from squeezelab.compress.pruning.fire_removal import (
    fire_modules,
    removable_fires,
    remove_fires,
)
from squeezelab.models import create_model

# squeezenet_cifar's layout at a tiny width: Fire indices 2 and 6 widen (16->32, 32->48), the
# other six keep their width and have a simple bypass
TINY = {"fire_config": [[4, 8, 8], [4, 8, 8], [8, 16, 16], [8, 16, 16],
                        [8, 16, 16], [8, 16, 16], [8, 24, 24], [8, 24, 24]],
        "stem_channels": 16}


def model(name="squeezenet_cifar", **kwargs):
    torch.manual_seed(0)
    net = create_model(name, **kwargs).eval()
    # BatchNorm statistics away from (0, 1), so a wrong mapping of them would show
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net


def test_removable_fires_are_those_with_equal_widths():
    net = model(**TINY)
    assert removable_fires(net) == {name: "bypass" for name in (
        "features.4", "features.5", "features.8", "features.9", "features.10", "features.13")}
    idx = {name: i for name, (i, _) in fire_modules(net).items()}
    assert [idx[n] for n in removable_fires(net)] == [0, 1, 3, 4, 5, 7]
    # without bypass: the same widths, so the same Fires, but their output is replaced
    plain = model(**TINY, bypass="none")
    assert set(removable_fires(plain).values()) == {"no bypass"}
    # the course-study family: 128 -> 128 after fire2 (index 1) has no bypass either
    assert "features.4" in removable_fires(model("squeezenet_cifar_e2"))


def test_removing_fires_is_exactly_the_identity_in_their_place():
    net = model(**TINY)
    x = torch.randn(3, 3, 32, 32)
    new, report = remove_fires(net, ["features.8", "features.13"])
    assert report.removed == {"features.8": 3, "features.13": 7}
    assert report.skip_fires == [3, 7]
    assert new.spec["kwargs"]["skip_fires"] == [3, 7]
    removed = sum(p.numel() for n in ("features.8", "features.13")
                  for p in net.get_submodule(n).parameters())
    assert report.params_after == report.params_before - removed
    # the reference: the same model with those Fires' forward replaced by x -> x
    expected_model = model(**TINY)
    for name in ("features.8", "features.13"):
        fire = expected_model.get_submodule(name)
        fire.forward = types.MethodType(lambda self, t: t, fire)
    with torch.no_grad():
        assert torch.allclose(new(x), expected_model(x), atol=1e-5)
        assert not torch.allclose(new(x), net(x), atol=1e-3)  # the Fires did something
    # the input model is unchanged, and the result rebuilds from its checkpoint
    assert len(fire_modules(net)) == 8 and len(fire_modules(new)) == 6


def test_removal_composes_and_rebuilds_from_a_checkpoint(tmp_path):
    net = model(**TINY)
    x = torch.randn(2, 3, 32, 32)
    once, _ = remove_fires(net, ["features.5"])
    # the new model's numbering: fire index 3 now sits at another features position
    later = next(n for n, (i, _) in fire_modules(once).items() if i == 3)
    twice, report = remove_fires(once, [later])
    both, _ = remove_fires(net, ["features.5", "features.8"])
    assert report.skip_fires == [1, 3]
    with torch.no_grad():
        assert torch.allclose(twice(x), both(x), atol=1e-6)
    path = save_checkpoint(tmp_path / "m", twice, meta={})
    back, _ = model_from_checkpoint(path)
    with torch.no_grad():
        assert torch.equal(back(x), twice(x))


def test_bad_requests_name_the_fire():
    net = model(**TINY)
    with pytest.raises(ValueError, match=r"'features.6' maps 16 channels to 32: only a Fire "
                                         "with equal input and output widths"):
        remove_fires(net, ["features.6"])
    with pytest.raises(ValueError, match="'features.7' is not a Fire module"):
        remove_fires(net, ["features.7"])  # the max-pool
    with pytest.raises(TypeError, match="needs a SqueezeNet"):
        remove_fires(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)), [])
