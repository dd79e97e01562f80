"""``create_skeleton`` (models/skeletons.py): the first skeleton of a spec is built, later ones
are copies that behave as fresh builds and share nothing mutable with each other, and a model
that cannot be copied faithfully is built every time."""
import pytest
import torch
import torch.nn as nn

import squeezelab
from squeezelab.models import create_model, create_skeleton, registry, skeleton, skeletons


def _signature(model: nn.Module) -> list:
    """Everything a load relies on: each module's name, type and plain attributes, and each
    state-dict tensor's name, shape, dtype and device."""
    modules = [(name, type(m).__name__,
                {k: v for k, v in vars(m).items() if k not in skeletons._TREE})
               for name, m in model.named_modules()]
    tensors = [(k, tuple(v.shape), v.dtype, v.device.type) for k, v in model.state_dict().items()]
    return [modules, tensors]


@pytest.mark.parametrize("name", squeezelab.list_models())
def test_every_models_copy_is_what_a_fresh_skeleton_build_gives(name):
    with skeleton():
        fresh = create_model(name)
    # every model of the zoo is copied (a new attribute that is not plain data would make
    # its .sqz loads build it every time, 3-4 ms slower for SqueezeNet v1.0)
    assert skeletons._copyable(fresh)
    first, second = create_skeleton(name), create_skeleton(name)
    assert _signature(first) == _signature(second) == _signature(fresh)
    ours = {id(m) for m in first.modules()} | {id(v) for m in first.modules()
                                                for v in vars(m).values()
                                                if isinstance(v, (dict, list, set))}
    theirs = {id(m) for m in second.modules()} | {id(v) for m in second.modules()
                                                  for v in vars(m).values()
                                                  if isinstance(v, (dict, list, set))}
    assert not ours & theirs  # no module, dict, list or set in common


def test_a_copy_changed_in_every_way_leaves_the_next_one_as_built():
    model = create_skeleton("squeezenet1_0", num_classes=10)
    reference = _signature(create_skeleton("squeezenet1_0", num_classes=10))
    model.spec["kwargs"]["num_classes"] = 99
    model.fire_config[0] = None
    model.register_forward_hook(lambda *a: None)
    model.features[0].register_forward_pre_hook(lambda *a: None)
    model.features[0].extra = [1, 2]
    real = create_model("squeezenet1_0", num_classes=10)
    model.load_state_dict(real.state_dict(), assign=True)  # what a load does
    again = create_skeleton("squeezenet1_0", num_classes=10)
    assert _signature(again) == reference
    assert all(t.is_meta for t in again.state_dict().values())
    assert not again._forward_hooks and not again.features[0]._forward_pre_hooks
    x = torch.randn(1, 3, 64, 64)
    again.load_state_dict(real.state_dict(), assign=True)
    assert torch.equal(again.eval()(x), real.eval()(x))


class _Hooked(nn.Module):
    """A model whose constructor registers a hook bound to itself: a copy would call the
    original's, so it must be built every time."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(4, num_classes)
        self.calls = 0
        self.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1

    def forward(self, x):
        return self.fc(x)


def test_models_with_hooks_or_objects_of_their_own_are_built_every_time(monkeypatch):
    entry = registry.ModelEntry("hooked_for_test", lambda num_classes=10: _Hooked(num_classes),
                                default_input_size=4, default_num_classes=10)
    monkeypatch.setitem(registry._REGISTRY, "hooked_for_test", entry)
    a, b = create_skeleton("hooked_for_test"), create_skeleton("hooked_for_test")
    assert a is not b and not skeletons._copyable(a)
    real = _Hooked()
    b.load_state_dict(real.state_dict(), assign=True)
    b(torch.randn(2, 4))
    assert (a.calls, b.calls) == (0, 1)  # each one's hook counts its own calls
    model = create_model("squeezenet_cifar")
    assert skeletons._copyable(model)
    model.helper = object()  # an attribute the copy cannot check it duplicates faithfully
    assert not skeletons._copyable(model)


def test_a_swapped_registry_entry_is_not_served_an_old_copy(monkeypatch):
    """The kept skeletons are keyed by the builder too: a registry entry replaced under the
    same name builds the new model."""
    create_skeleton("squeezenet_cifar")
    other = registry.get_entry("squeezenet_cifar_baseline")
    monkeypatch.setitem(registry._REGISTRY, "squeezenet_cifar", other)
    with skeleton():
        want = create_model("squeezenet_cifar_baseline", num_classes=10)
    assert _signature(create_skeleton("squeezenet_cifar", num_classes=10))[1] == \
        _signature(want)[1]
