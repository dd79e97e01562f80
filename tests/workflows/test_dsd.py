"""Dense-sparse-dense training (Han et al. 2017, arXiv 1607.04381) on real CIFAR-10 images:
masks hold during the sparse phase, re-dense restarts pruned weights from zero at lr/10, the
per-phase metrics and plot, exact resume across a phase boundary, bad input."""
import json

import pytest
import torch
from hook_checks import InterruptAt
from model_configs import TINY

from squeezelab.checkpoint import load_checkpoint
from squeezelab.compress.pruning.magnitude import compute_masks
from squeezelab.train import TrainConfig, TrainHook, train
from squeezelab.workflows.dsd import DSDConfig, DSDHook, parse_phase_epochs, run_dsd


@pytest.fixture(scope="module")
def cifar_mini(cifar_small):
    """200 train / 50 test real images: 4 steps per epoch at batch 50."""
    train_data, test_data = cifar_small
    return train_data.subset(torch.arange(0, 1000, 5)), test_data.subset(torch.arange(0, 300, 6))


def config(tmp_path, **kw):
    # no warm-up, plain labels: pinned, as the schedule tests count on them (unset, they would
    # be squeezenet_cifar's own train defaults)
    base = dict(model="squeezenet_cifar", model_args=TINY, epochs=3, batch_size=50,
                optimizer="momentum", lr=0.05, weight_decay=5e-4, schedule="constant",
                warmup_epochs=0.0, label_smoothing=0.0,
                precision="fp32", channels_last=False, out_dir=str(tmp_path), run_name="run",
                progress=False)
    base.update(kw)
    return TrainConfig(**base)


# --- config -----------------------------------------------------------------------------------
def test_parse_and_phases():
    c = DSDConfig.parse("sparsity=0.4,epochs=5-3-5")
    assert (c.sparsity, c.dense_epochs, c.sparse_epochs, c.redense_epochs) == (0.4, 5, 3, 5)
    assert c.total_epochs == 13 and c.redense_lr_factor == 0.1
    c = DSDConfig.parse("sparsity=0.5,epochs=1-2-1,cycles=2,exclude=classifier+conv3x3")
    assert c.exclude == ["classifier", "conv3x3"] and c.total_epochs == 7
    assert [c.phase_at(e) for e in range(7)] == [
        ("dense", 0), ("sparse", 1), ("sparse", 1), ("redense", 1),
        ("sparse", 2), ("sparse", 2), ("redense", 2)]
    assert parse_phase_epochs("3-5") == {"dense_epochs": 0, "sparse_epochs": 3,
                                         "redense_epochs": 5}
    assert DSDConfig.from_dict({"epochs": [2, 1, 1]}).total_epochs == 4
    assert DSDConfig() == DSDConfig.parse("sparsity=0.4,epochs=5-3-5")  # the study's defaults


def test_layers_and_exclude_choose_the_pruned_weights():
    from squeezelab.models import create_model

    model = create_model("squeezenet_cifar", num_classes=10, **TINY)
    masks = compute_masks(model, DSDConfig(layers=["expand3x3", "squeeze"],
                                           exclude=["features.4.*"]).prune_config())
    fires = sorted({n.split(".")[1] for n in masks}, key=int)
    assert sorted(masks) == sorted(f"features.{i}.{part}.weight" for i in fires
                                   for part in ("squeeze", "expand3x3"))
    assert "4" not in fires and len(fires) == 7
    assert all(m.float().mean().item() == pytest.approx(0.6, abs=0.02) for m in masks.values())


@pytest.mark.parametrize("text,match", [
    ("sparsity=1.2", r"DSD sparsity must be in \[0, 1\), got 1.2"),
    ("epochs=5-x-5", r"DSD epochs must be .* such as 5-3-5, got '5-x-5'"),
    ("epochs=5-3-5-1", r"DSD epochs must be"),
    ("epochs=5-0-5", r"sparse_epochs must be an integer >= 1, got 0"),
    ("sparsity=high", r"DSD sparsity must be a number, got 'high'"),
    ("redense_lr_factor=2", r"redense_lr_factor must be in \(0, 1\], got 2"),
    ("lr_schedule=step", r"lr_schedule must be one of \('phase', 'run', 'capped'\), got 'step'"),
    ("spars=0.3", r"--dsd 'spars=0.3': unknown key 'spars' \(did you mean sparsity"),
    ("sparsity", r"--dsd expects KEY=VALUE"),
    ("epochs=1-1-1,dense_epochs=2", r"give epochs or dense_epochs, not both"),
    ("plot_layer=3", r"plot_layer must be a parameter name or null, got 3"),
])
def test_bad_input(text, match):
    with pytest.raises(ValueError, match=match):
        DSDConfig.parse(text)


def test_epoch_count_and_layer_typos_fail_before_training(tmp_path, cifar_mini):
    hook = DSDHook(DSDConfig.parse("epochs=1-1-1"))
    with pytest.raises(ValueError, match="the run has 5 epochs, but the DSD schedule 1-1-1 "
                                         "needs 3"):
        train(config(tmp_path, epochs=5), hooks=[hook], data=cifar_mini)
    with pytest.raises(ValueError, match="'fc9' matches no prunable parameter"):
        run_dsd(config(tmp_path, run_name="typo"), DSDConfig.parse("epochs=1-1-1,layers=fc9"),
                data=cifar_mini)


# --- training ---------------------------------------------------------------------------------
class Recorder(TrainHook):
    """After the DSD hook: checks every step that masked weights are zero, records lrs."""

    name = "recorder"

    def __init__(self, dsd):
        self.dsd, self.lrs, self.violations, self.at_redense_start = dsd, [], 0, None
        self.sparse_masks = None

    def on_epoch_start(self, state):
        if self.dsd.phase == "sparse" and self.sparse_masks is None:
            self.sparse_masks = self.dsd.masks.copy()
        if self.dsd.phase == "redense" and self.at_redense_start is None:
            params = dict(state.model.named_parameters())
            self.at_redense_start = {n: params[n].detach()[~m].clone()
                                     for n, m in self.sparse_masks.items()}

    def after_backward(self, state):  # the lr the coming optimizer step uses
        self.lrs.append((self.dsd.phase, state.optimizer.param_groups[0]["lr"]))

    def after_step(self, state):
        params = dict(state.model.named_parameters())
        for n, m in self.dsd.masks.items():
            self.violations += int((params[n].detach()[~m] != 0).sum())


def test_dsd_phases_masks_lr_metrics_and_plot(tmp_path, cifar_mini):
    dsd = DSDHook(DSDConfig.parse("sparsity=0.4,epochs=1-1-1"))
    rec = Recorder(dsd)
    result = train(config(tmp_path), hooks=[dsd, rec], data=cifar_mini)
    # masks held after every one of the 4 sparse steps; none during dense/re-dense
    assert rec.violations == 0
    assert [p for p, _ in rec.lrs] == ["dense"] * 4 + ["sparse"] * 4 + ["redense"] * 4
    # per-layer top-k: exactly round(0.4 N) pruned in every layer
    for _name, mask in rec.sparse_masks.items():
        assert int((~mask).sum()) == int(mask.numel() * 0.4 + 0.5)
    # constant schedule: re-dense trains at exactly lr / 10
    assert {lr for p, lr in rec.lrs if p != "redense"} == {0.05}
    assert {lr for p, lr in rec.lrs if p == "redense"} == {0.05 * 0.1}
    # pruned weights restart from exactly zero, and re-dense trains them again
    assert all((v == 0).all() for v in rec.at_redense_start.values())
    params = dict(result.model.named_parameters())
    revived = sum(int((params[n].detach()[~m] != 0).sum()) for n, m in rec.sparse_masks.items())
    assert revived > 0.9 * sum(int((~m).sum()) for m in rec.sparse_masks.values())
    # metrics in the JSONL
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in lines] == ["dense", "sparse", "redense"]
    assert lines[0]["sparsity"] == 0.0 and lines[2]["sparsity"] == 0.0
    assert lines[1]["sparsity"] == pytest.approx(0.4, abs=0.002)
    # one histogram per phase end; the sparse one has 40% exact zeros in the plot layer
    png = result.run_dir / "dsd_weights.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hists = json.loads(png.with_suffix(".json").read_text())
    assert [h["phase"] for h in hists] == ["dense", "sparse", "redense"]
    assert hists[1]["zeros"] == int(hists[1]["numel"] * 0.4 + 0.5)
    assert hists[2]["zeros"] < hists[1]["zeros"] // 10
    assert all(sum(h["counts"]) == h["numel"] for h in hists)


@pytest.mark.parametrize("lr_schedule", ["phase", "run", "capped"])
def test_cosine_schedule_per_phase_or_over_the_run(tmp_path, cifar_mini, lr_schedule):
    import math

    dsd = DSDHook(DSDConfig.parse(f"epochs=1-1-1,lr_schedule={lr_schedule}"))
    probe = Recorder(dsd)
    train(config(tmp_path, schedule="cosine"), hooks=[dsd, probe], data=cifar_mini)
    assert [p for p, _ in probe.lrs] == ["dense"] * 4 + ["sparse"] * 4 + ["redense"] * 4
    scale = [1.0] * 8 + [0.1] * 4
    if lr_schedule == "phase":  # cosine from the top over each phase's 4 steps
        shape = [0.5 * (1 + math.cos(math.pi * (s % 4) / 4)) for s in range(12)]
    else:  # one cosine over the 12 steps
        shape = [0.5 * (1 + math.cos(math.pi * s / 12)) for s in range(12)]
    if lr_schedule == "capped":  # re-dense: the cosine's 0.25 and 0.15 capped at 1/10, its
        # 0.067 and 0.017 kept
        expected = [0.05 * (min(a, 0.1) if s >= 8 else a) for s, a in enumerate(shape)]
        assert expected[8:10] == pytest.approx([0.005, 0.005]) and expected[11] < 0.001
    else:  # "run" scales re-dense by 1/10
        expected = [0.05 * a * b for a, b in zip(shape, scale)]
    assert [lr for _, lr in probe.lrs] == pytest.approx(expected, rel=1e-9)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, cifar_mini):
    tmp = tmp_path_factory.mktemp("straight")
    return run_dsd(config(tmp, schedule="cosine"), DSDConfig.parse("epochs=1-1-1"),
                   data=cifar_mini)


# 4 steps per epoch: step 6 is inside the sparse phase, step 8 its last step (the stop lands
# on the sparse -> re-dense boundary)
@pytest.mark.parametrize("stop_step", [8])
def test_resume_across_a_phase_boundary_reaches_the_same_weights(tmp_path, cifar_mini,
                                                                 straight, stop_step):
    cfg = config(tmp_path, schedule="cosine", run_name="cut")
    dsd_cfg = DSDConfig.parse("epochs=1-1-1")
    cut = run_dsd(cfg, dsd_cfg, hooks=[InterruptAt(stop_step)], data=cifar_mini)
    assert cut.interrupted
    ckpt = load_checkpoint(cut.run_dir / "checkpoints" / "last")
    assert ckpt.meta["hooks"]["dsd"]["phase"] == "sparse"
    resumed = run_dsd(cfg, dsd_cfg, data=cifar_mini, resume=True, run_dir=cut.run_dir)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resume diverged from the straight run"
    assert [r["phase"] for r in resumed.history] == ["dense", "sparse", "redense"]
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in straight.history]


def test_from_dense_checkpoint_skips_the_dense_phase(tmp_path, cifar_mini):
    dense = train(config(tmp_path, epochs=1, run_name="dense"), data=cifar_mini)
    ckpt = dense.run_dir / "checkpoints" / "last"
    dsd = DSDHook(DSDConfig.parse("sparsity=0.3,epochs=1-1"))
    rec = Recorder(dsd)
    # the loaded dense weights decide the sparse masks
    expected = compute_masks(dense.model, dsd.config.prune_config())
    result = train(config(tmp_path, epochs=2, run_name="dsd"), hooks=[dsd, rec],
                   model=_load(ckpt), data=cifar_mini)
    assert [r["phase"] for r in result.history] == ["sparse", "redense"]
    assert all(torch.equal(expected[n], rec.sparse_masks[n]) for n in expected)
    via = run_dsd(config(tmp_path, run_name="via"), DSDConfig.parse("sparsity=0.3,epochs=9-1-1"),
                  from_checkpoint=ckpt, data=cifar_mini)
    assert [r["phase"] for r in via.history] == ["sparse", "redense"]
    a, b = result.model.state_dict(), via.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _load(path):
    from squeezelab.checkpoint import model_from_checkpoint

    model, _ = model_from_checkpoint(path)
    return model
