"""FitNets (Romero et al., arXiv 1412.6550): regressor kernel choice, layer lookup errors, the
stage-1 split of parameters, the KD weight schedule, and both stages through train()."""
import math

import pytest
import torch
from model_configs import SMALL

from squeezelab.models import create_model
from squeezelab.train import TrainConfig, TrainHook
from squeezelab.train.distill import DistillError
from squeezelab.workflows.fitnets import (
    FitNetsConfig,
    find_module,
    fitnets_kd_loss,
    fitnets_train,
    hint_loss,
    linear_weight,
    make_regressor,
    probe_shapes,
    regressor_kernel,
)


def test_regressor_kernel_choice():
    assert regressor_kernel((16, 16), (8, 8)) == (9, 9)  # 16 - 9 + 1 = 8
    assert regressor_kernel((8, 8), (8, 8)) == (1, 1)
    assert regressor_kernel((9, 7), (4, 7)) == (6, 1)
    with pytest.raises(DistillError, match=r"hint map \(16, 16\) is larger than the guided "
                                           r"map \(8, 8\)"):
        regressor_kernel((8, 8), (16, 16))
    conv = make_regressor((64, 16, 16), (32, 8, 8))
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (64, 32, (9, 9))
    assert conv(torch.zeros(1, 64, 16, 16)).shape == (1, 32, 8, 8)


def test_unknown_layer_lists_candidates_close_matches_first():
    model = create_model("resnet18_cifar", width=8)
    with pytest.raises(DistillError, match=r"no module 'layr3'; candidates: layer3, "):
        find_module(model, "layr3", "teacher")
    with pytest.raises(DistillError, match=r"\(ResNetCifar\) has no module 'features.6'.*conv1"):
        find_module(model, "features.6", "teacher")
    assert find_module(model, "layer3.0.conv1") is model.layer3[0].conv1


def test_hint_loss_and_kd_loss_by_hand():
    r = torch.tensor([[[[1.0, 2.0]]]])
    h = torch.tensor([[[[0.0, 4.0]]]])
    assert hint_loss(r, h).item() == pytest.approx(0.5 * (1 + 4) / 2)
    with pytest.raises(DistillError, match="differ in shape"):
        hint_loss(r, h[..., :1])
    zs, zt, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]]), torch.tensor([0])
    tau, lam = 3.0, 2.5
    pt = [math.exp(0.0) / (math.exp(0.0) + math.exp(1.0)), math.exp(1.0) / (1 + math.exp(1.0))]
    ls = [math.log(math.exp(1 / 3) / (math.exp(1 / 3) + 1)), math.log(1 / (math.exp(1 / 3) + 1))]
    soft = -(pt[0] * ls[0] + pt[1] * ls[1])
    ce = -math.log(math.exp(1.0) / (math.exp(1.0) + 1))
    assert fitnets_kd_loss(zs, zt, y, tau, lam).item() == pytest.approx(ce + lam * soft, rel=1e-6)


def test_lambda_decays_linearly_from_4_to_1():
    assert [linear_weight(s, 4, 4.0, 1.0) for s in range(4)] == [4.0, 3.0, 2.0, 1.0]
    assert linear_weight(0, 1, 4.0, 1.0) == 4.0


def test_probe_finds_shapes_and_the_parameters_before_the_guided_layer():
    student = create_model("squeezenet_cifar", **SMALL)
    teacher = create_model("resnet18_cifar", width=8)
    g, h, before = probe_shapes(student, teacher, "features.5", "layer2",
                                torch.zeros(2, 3, 32, 32))
    # stem 3x3/1 then pool -> 16x16; fire1..3 (expand 32) -> pool after fire 3 (index 2)
    assert g == (32, 16, 16) and h == (16, 16, 16)
    assert "features.0.weight" in before and "features.4.squeeze.weight" in before
    assert not any(n.startswith(("features.7", "classifier")) for n in before)


def test_config_parse():
    fit = FitNetsConfig.parse("teacher=t,hint=layer3,guided=features.6,stage1_epochs=2")
    assert (fit.hint, fit.guided, fit.stage1_epochs, fit.temperature) == \
        ("layer3", "features.6", 2, 3.0)
    with pytest.raises(DistillError, match="stage1_epochs must be a positive integer, got 0"):
        FitNetsConfig(teacher="t", hint="a", guided="b", stage1_epochs=0)


@pytest.fixture(scope="module")
def cifar_100(cifar_small):
    train_data, test_data = cifar_small
    return train_data.subset(torch.arange(0, 1000, 10)), test_data.subset(torch.arange(0, 300, 10))


def test_both_stages_reduce_the_hint_loss_and_train_the_right_parameters(tmp_path, cifar_100):
    torch.manual_seed(3)
    teacher = create_model("resnet18_cifar", width=8).eval()
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = create_model("squeezenet_cifar", **SMALL)
    cfg = TrainConfig(model="squeezenet_cifar", model_args=SMALL, epochs=1, batch_size=20,
                      eval_every=5, optimizer="adamw", lr=0.01, weight_decay=0.01, precision="fp32",
                      channels_last=False, out_dir=str(tmp_path), run_name="fit",
                      progress=False, augment="none")
    fit = FitNetsConfig(teacher="unused", hint="layer2", guided="features.5", stage1_epochs=3)
    start = {k: v.clone() for k, v in student.state_dict().items()}
    snapshot = {}

    class Record(TrainHook):  # records the student at the start of stage 2
        name = "record"

        def on_train_start(self, state):
            snapshot.update({k: v.clone() for k, v in state.model.state_dict().items()})

    stage1, stage2 = fitnets_train(cfg, fit, data=cifar_100, model=student, teacher=teacher,
                                   hooks=[Record()])
    losses = [r["train_loss"] for r in stage1.history]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0], losses
    # stage 1 moved the layers up to the guided one and left the rest untouched
    assert not torch.equal(snapshot["features.0.weight"], start["features.0.weight"])
    assert torch.equal(snapshot["features.8.squeeze.weight"], start["features.8.squeeze.weight"])
    assert torch.equal(snapshot["classifier.1.weight"], start["classifier.1.weight"])
    assert all(p.requires_grad for p in student.parameters())  # unfrozen for stage 2
    # stage 2 trained everything with the decaying KD weight, the teacher unchanged
    assert not torch.equal(student.classifier[1].weight, start["classifier.1.weight"])
    assert stage2.history[-1]["kd_lambda"] == pytest.approx(1.0)
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    assert (stage2.run_dir / "stage1_hints" / "checkpoints" / "last.json").exists()
    assert stage2.run_dir == tmp_path / "fit"
