"""Every registered model is built, run and counted by parametrizing over list_models()."""
import pytest
import torch

import squeezelab
from squeezelab.models import (
    ModelArgumentError,
    UnknownModelError,
    create_model,
    get_entry,
    model_spec,
    skeleton,
)

# Exact parameter counts at each model's default class count (from the papers / torchvision
# where those exist; our own designs are pinned so a change to them is deliberate).
EXPECTED_PARAMS = {
    # stem 3*24*2*2 + 24 = 312; the groups 9*(24*64 + 64*64) + 4*64 = 50,944, 9*(64*128 +
    # 128*128) + 4*128 = 221,696 and 9*(128*192 + 192*192) + 4*192 = 553,728; classifier 1,920
    "airbench_cifar": 828_600,
    "alexnet": 61_100_840,
    # stem 312; per group a first Fire (in -> w) and two w -> w, SR 0.25, half the expand 3x3,
    # BatchNorm after every conv: 40,464 + 162,720 + 648,000 (tests/models/test_firegroups.py);
    # classifier 3,840
    "fire_groups_cifar": 855_336,
    "alexnet_cifar": 7_506_762,
    "googlenet_cifar": 841_282,  # = the sum of its blocks (tests/layers/test_compact_blocks.py)
    "mobilenet_v1": 4_231_976,
    "mobilenet_v1_cifar": 3_217_226,
    # MobileNetV2 at 10 classes: torchvision's 3,504,872 less 1280*990 classifier weights and
    # 990 biases; the CIFAR strides change no count
    "mobilenet_v2_cifar": 2_236_682,
    "resnet18_cifar": 11_173_962,
    "resnet_bottleneck_cifar": 882_394,
    "squeezenet": 1_248_424,
    "squeezenet1_0": 1_248_424,
    "squeezenet1_1": 1_235_496,
    "squeezenet1_0_simple_bypass": 1_248_424,
    "squeezenet1_0_complex_bypass": 1_589_672,
    "squeezenet_cifar_baseline": 740_554,
    "squeezenet_cifar_e1": 740_554,
    "squeezenet_cifar_e2": 727_594,
    "squeezenet_cifar_e3": 715_162,
    "squeezenet_cifar_e4": 727_594,
    "squeezenet_cifar_e5": 773_764,
}


def test_every_registered_model_has_a_pinned_count():
    missing = set(squeezelab.list_models()) - set(EXPECTED_PARAMS) - {
        "squeezenet_cifar", "squeezenet_cifar_wide"}
    assert not missing, f"pin the parameter count of {missing}"


@pytest.mark.parametrize("name", squeezelab.list_models())
def test_model_builds_runs_and_counts(name):
    entry = get_entry(name)
    model = squeezelab.create_model(name).eval()
    if name in EXPECTED_PARAMS:
        assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[name]
    # big ImageNet models are run at a reduced size that still passes through every layer
    size = entry.default_input_size if entry.default_input_size <= 64 else 96
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, entry.default_num_classes)
    assert torch.isfinite(out).all()
    assert model_spec(model) == {"name": name, "kwargs": {"num_classes":
                                                           entry.default_num_classes}}


@pytest.mark.parametrize("name", squeezelab.list_models("*cifar*"))
def test_cifar_models_take_num_classes_and_in_chans(name):
    model = squeezelab.create_model(name, num_classes=7, in_chans=1)
    out = model.eval()(torch.randn(1, 1, 32, 32))
    assert out.shape == (1, 7)


def test_unknown_model_lists_close_matches():
    with pytest.raises(UnknownModelError, match="did you mean .*squeezenet1_0"):
        squeezelab.create_model("squeezenet1_O")


def test_unknown_argument_is_named():
    with pytest.raises(TypeError, match="unknown argument.*'widht'") as caught:
        squeezelab.create_model("alexnet", widht=2)
    # a bad keyword, and bad input the command line reports in one line
    assert isinstance(caught.value, ValueError)


def test_argument_of_the_wrong_type_is_named():
    # widths takes a list; a number reaches the builder, whose TypeError is reported with the value
    with pytest.raises(ModelArgumentError,
                       match=r"'fire_groups_cifar' cannot be built with widths=3: .*not iterable"
                       ) as caught:
        squeezelab.create_model("fire_groups_cifar", widths=3)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, TypeError)


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        squeezelab.create_model("squeezenet1_0", num_classes=0)


def test_list_models_pattern():
    assert squeezelab.list_models("squeezenet1_*") == [
        "squeezenet1_0", "squeezenet1_0_complex_bypass", "squeezenet1_0_simple_bypass",
        "squeezenet1_1"]


@pytest.mark.parametrize("name", squeezelab.list_models())
def test_train_defaults_are_valid_training_settings(name):
    """A model's registered train_defaults (the settings measured to train it) make a valid
    TrainConfig, which takes them for every field it is not given."""
    from squeezelab.train import TrainConfig

    defaults = dict(get_entry(name).train_defaults)
    cfg = TrainConfig(model=name)
    assert cfg.defaults_from_model == defaults


def test_the_cifar_models_register_measured_train_defaults():
    """The default model and the course-study family train from their own defaults (a warm-up
    above all: without one the course models' ReLU logits die at Adam's first steps)."""
    for name in ("squeezenet_cifar", *squeezelab.list_models("squeezenet_cifar_e*"),
                 "squeezenet_cifar_baseline"):
        defaults = get_entry(name).train_defaults
        assert defaults["optimizer"] == "adamw" and defaults["warmup_epochs"] > 0, name
    with pytest.raises(TypeError):  # read-only: one mapping serves a family of models
        get_entry("squeezenet_cifar").train_defaults["lr"] = 1.0


def test_skeleton_builds_on_meta_without_running_the_initialisers():
    """``skeleton`` is for models a file is about to fill: same tensors, no memory, and no
    initialiser runs (a real tensor passed to one inside it keeps its values)."""
    reference = create_model("squeezenet1_1", num_classes=7)
    with skeleton():
        model = create_model("squeezenet1_1", num_classes=7)
        probe = torch.full((3, 3), 2.0, device="cpu")
        torch.nn.init.kaiming_uniform_(probe)
        torch.nn.init.normal_(tensor=probe)
    assert torch.equal(probe, torch.full((3, 3), 2.0))
    assert all(t.is_meta for t in model.state_dict().values())
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()}
    model = model.to_empty(device="cpu")
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(model.eval()(x), reference.eval()(x))
    torch.nn.init.normal_(probe)  # outside it, initialisers work again
    assert not torch.equal(probe, torch.full((3, 3), 2.0))
