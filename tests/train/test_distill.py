"""Knowledge distillation (Hinton et al., arXiv 1503.02531): the KD and logit-matching losses
against hand computations, the frozen teacher, and bad input caught before training."""
import math

import pytest
import torch
from hook_checks import InterruptAt
from model_configs import SMALL

from squeezelab.checkpoint import save_checkpoint
from squeezelab.models import create_model
from squeezelab.train import TrainConfig, train
from squeezelab.train.distill import (
    DistillConfig,
    DistillError,
    DistillHook,
    kd_loss,
    logit_matching_loss,
)


def _softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_kd_loss_matches_a_hand_computation():
    zs = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    zt = [[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    y = [1, 2]
    T, alpha = 2.0, 0.7
    kl = ce = 0.0
    for s, t, label in zip(zs, zt, y):
        ps, pt = _softmax([v / T for v in s]), _softmax([v / T for v in t])
        kl += sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt))
        ce += -math.log(_softmax(s)[label])
    expected = alpha * T * T * kl / 2 + (1 - alpha) * ce / 2
    got = kd_loss(torch.tensor(zs), torch.tensor(zt), torch.tensor(y), T, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # alpha = 0 is plain cross-entropy; equal logits give no soft loss
    assert kd_loss(torch.tensor(zs), torch.tensor(zt), torch.tensor(y), T, 0.0).item() == \
        pytest.approx(ce / 2, rel=1e-6)
    assert kd_loss(torch.tensor(zs), torch.tensor(zs), torch.tensor(y), T, 1.0).item() == \
        pytest.approx(0.0, abs=1e-7)


def test_logit_matching_loss_matches_a_hand_computation():
    zs = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    zt = torch.tensor([[3.0, 2.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    # 1/2 * sum of squares per sample: (4 + 0) / 2 = 2 and (0 + 4) / 2 = 2 -> mean 2
    ce = (-math.log(_softmax([1.0, 2.0])[0]) - math.log(_softmax([0.0, -1.0])[1])) / 2
    got = logit_matching_loss(zs, zt, y, alpha=0.25)
    assert got.item() == pytest.approx(0.25 * 2.0 + 0.75 * ce, rel=1e-6)


def test_config_parsing_and_validation():
    cfg = DistillConfig.parse("teacher=runs/t,T=4,alpha=0.9,mode=logits")
    assert (cfg.teacher, cfg.temperature, cfg.alpha, cfg.mode) == ("runs/t", 4, 0.9, "logits")
    with pytest.raises(DistillError, match="unknown key 'alhpa'.*did you mean alpha"):
        DistillConfig.parse("teacher=x,alhpa=0.5")
    with pytest.raises(DistillError, match="teacher=PATH .* is required"):
        DistillConfig.from_dict({"T": 2})
    with pytest.raises(DistillError, match="alpha must be in \\[0, 1\\], got 1.5"):
        DistillConfig(teacher="x", alpha=1.5)
    with pytest.raises(DistillError, match="mode must be one of .*got 'soft'"):
        DistillConfig(teacher="x", mode="soft")
    with pytest.raises(DistillError, match="temperature must be > 0, got 0"):
        DistillConfig(teacher="x", temperature=0)


@pytest.fixture(scope="module")
def cifar_100(cifar_small):
    train_data, test_data = cifar_small
    return train_data.subset(torch.arange(0, 1000, 10)), test_data.subset(torch.arange(0, 300, 6))


def _teacher_ckpt(path, num_classes=10):
    torch.manual_seed(1)
    teacher = create_model("resnet18_cifar", num_classes=num_classes, width=8)
    return save_checkpoint(path, teacher), teacher


def _cfg(tmp_path, **kw):
    base = dict(model="squeezenet_cifar", model_args=SMALL, epochs=1, batch_size=50,
                optimizer="adamw", lr=0.005, precision="fp32", channels_last=False,
                out_dir=str(tmp_path), run_name="student", progress=False)
    return TrainConfig(**{**base, **kw})


def test_teacher_stays_frozen_and_its_logits_drive_the_loss(tmp_path, cifar_100):
    import copy

    from squeezelab.data import BatchLoader

    path, original = _teacher_ckpt(tmp_path / "teacher")
    hook = DistillHook(DistillConfig(teacher=str(path), temperature=4.0, alpha=0.9))
    before = {k: v.clone() for k, v in hook.teacher.state_dict().items()}
    # one step on all 100 images, no augmentation and no dropout: the epoch's train loss is
    # the loss at the student's initial weights, which a hand computation can repeat
    torch.manual_seed(0)
    student = create_model("squeezenet_cifar", num_classes=10, dropout=0.0, **SMALL)
    initial = copy.deepcopy(student)
    cfg = _cfg(tmp_path, batch_size=100, augment="none", model_args={**SMALL, "dropout": 0.0})
    result = train(cfg, hooks=[hook], data=cifar_100, model=student)
    loader = BatchLoader(cifar_100[0], 100, train=True, augment=None, seed=cfg.seed)
    loader.set_epoch(0)
    images, labels = next(iter(loader))  # the one batch, normalised as the loop's was
    with torch.no_grad():  # training-mode BatchNorm, as in the step: the batch's statistics
        expected = kd_loss(initial.train()(images), original.eval()(images), labels, 4.0, 0.9)
    assert result.history[-1]["train_loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert not torch.equal(student.state_dict()["features.0.weight"],
                           initial.state_dict()["features.0.weight"])  # and it took the step
    after = hook.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats too
    assert torch.equal(after["conv1.weight"], original.state_dict()["conv1.weight"])
    assert not any(p.requires_grad for p in hook.teacher.parameters())
    assert not hook.teacher.training
    # the hook's loss is kd_loss against the teacher's eval-mode logits
    images = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3])
    student_logits = torch.randn(4, 10)
    with torch.no_grad():
        expected = kd_loss(student_logits, original.eval()(images), labels, 4.0, 0.9)
    got = hook.loss(None, images, labels, student_logits, torch.tensor(0.0))
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_summary_names_the_teacher_and_the_other_methods(tmp_path, cifar_100, capsys):
    """A distilled run says so before its first step: which teacher, at what T and alpha, and
    the hooks its settings switched on, in the order they run (lookahead and the weight average
    after every other hook)."""
    path, _ = _teacher_ckpt(tmp_path / "teacher")
    hook = DistillHook(DistillConfig(teacher=str(path), temperature=2.5, alpha=0.7))
    train(_cfg(tmp_path, progress=True, ema_decay=0.9, lookahead_steps=5, lookahead_alpha=0.8),
          hooks=[hook], data=cifar_100)
    methods = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith("methods")]
    assert methods == [f"methods   distill (teacher {path}, T 2.5, alpha 0.7, kd), lookahead "
                       "(every 5 steps, alpha 0.8), ema (decay 0.9)"]


def test_class_count_mismatch_is_an_error_before_training(tmp_path, cifar_100):
    path, _ = _teacher_ckpt(tmp_path / "teacher5", num_classes=5)
    hook = DistillHook(DistillConfig(teacher=str(path)))
    with pytest.raises(DistillError, match="teacher predicts 5 classes but the student 10"):
        train(_cfg(tmp_path), hooks=[hook], data=cifar_100)
    assert not (tmp_path / "student" / "metrics.jsonl").exists()


def test_missing_teacher_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="teacher checkpoint .*nope does not exist"):
        DistillHook(DistillConfig(teacher=str(tmp_path / "nope")))


def test_cli_distill_flags_fail_before_training(tmp_path, capsys):
    from squeezelab.cli import main

    common = ["train", "--out-dir", str(tmp_path), "--run-name", "cli", "--progress", "false"]
    assert main([*common, "--distill", f"teacher={tmp_path / 'missing'},T=4"]) == 2
    assert "teacher checkpoint" in capsys.readouterr().err
    path, _ = _teacher_ckpt(tmp_path / "teacher")
    assert main([*common, "--distill", f"teacher={path},T=4",
                 "--fitnets", f"teacher={path},hint=layer3,guided=features.6"]) == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


def test_an_interrupted_distilled_run_resumes_with_its_teacher_to_the_same_weights(
        tmp_path, cifar_100):
    from squeezelab.train.config import ConfigError

    path, _ = _teacher_ckpt(tmp_path / "teacher")
    settings = DistillConfig(teacher=str(path), temperature=4.0, alpha=0.9)
    # 100 images / 25 = 4 steps an epoch, 2 epochs; cut inside the second
    cfg = _cfg(tmp_path, epochs=2, batch_size=25)
    straight = train(cfg.replace(run_name="straight"), hooks=[DistillHook(settings)],
                     data=cifar_100)
    cut = train(cfg.replace(run_name="cut"), hooks=[DistillHook(settings), InterruptAt(6)],
                data=cifar_100)
    assert cut.interrupted
    # resumed without its teacher the rest would train on the labels alone: refused at once
    with pytest.raises(ConfigError, match=f"cannot resume {cut.run_dir} without distill: "
                                          "the run was trained with it"):
        train(cfg.replace(run_name="cut"), resume=True, run_dir=cut.run_dir, data=cifar_100)
    resumed = train(cfg.replace(run_name="cut"), hooks=[DistillHook(settings)], resume=True,
                    run_dir=cut.run_dir, data=cifar_100)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed distilled run diverged"
    assert resumed.history[-1]["train_loss"] == straight.history[-1]["train_loss"]


def test_cli_resume_keeps_the_runs_distillation_and_refuses_another(tmp_path, cifar_tree,
                                                                     capsys):
    import json

    from squeezelab.cli import main

    path, _ = _teacher_ckpt(tmp_path / "teacher")
    runs = tmp_path / "runs"
    argv = ["train", "--data", str(cifar_tree), "--epochs", "1", "--batch-size", "50",
            "--limit-train", "100", "--limit-test", "50", "--precision", "fp32",
            "--channels-last", "false", "--progress", "false", "--out-dir", str(runs),
            "--model", "squeezenet_cifar",
            *(f"--model-arg={k}={json.dumps(v)}" for k, v in SMALL.items())]
    spec = f"teacher={path},T=3,alpha=0.7"
    assert main([*argv, "--run-name", "kd", "--distill", spec]) == 0
    assert main([*argv, "--run-name", "plain"]) == 0
    capsys.readouterr()
    kd, plain = runs / "kd", runs / "plain"
    # another teacher or temperature on a resume: refused, naming what the run has
    assert main(["train", "--resume", str(kd), "--epochs", "2", "--distill",
                 f"teacher={path},T=5,alpha=0.7"]) == 2
    err = capsys.readouterr().err
    assert f"cannot resume {kd} with --distill" in err and "'temperature': 3," in err
    assert main(["train", "--resume", str(plain), "--epochs", "2", "--distill", spec]) == 2
    assert "it was trained without distillation" in capsys.readouterr().err
    # a plain resume (or one repeating the same spec) goes on with the run's teacher
    assert main(["train", "--resume", str(kd), "--epochs", "2"]) == 0
    assert main(["train", "--resume", str(kd), "--epochs", "3", "--distill", spec]) == 0
    meta = json.loads((kd / "checkpoints" / "last.json").read_text())
    assert meta["epoch"] == 3
    assert meta["hooks"]["distill"] == {"teacher": str(path), "temperature": 3.0,
                                        "alpha": 0.7, "mode": "kd"}
