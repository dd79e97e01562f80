"""The training loop on real CIFAR-10 images: learning, run directory, exact resume, Ctrl-C,
divergence, bad input."""
import json
import math
import re

import pytest
import torch
import yaml
from hook_checks import InterruptAt
from model_configs import SMALL, small_run

from squeezelab.checkpoint import load_checkpoint, model_from_checkpoint
from squeezelab.train import (
    ConfigError,
    TrainConfig,
    TrainHook,
    TrainingDiverged,
    train,
)

config = small_run


def test_learns_above_chance_on_real_images(tmp_path, cifar_small, capsys):
    result = train(config(tmp_path, epochs=4), data=cifar_small)
    final = result.final
    # 10 classes: chance is 0.10 (std 0.017 over 300 test images); 4 epochs on 1,000 real
    # images reach twice that.
    assert final["test_top1"] > 0.20, result.history
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert "uniform guess" not in capsys.readouterr().err


def test_a_dead_classifier_is_reported_once(tmp_path, cifar_tiny, capsys):
    """Logits behind a ReLU that all sit below zero: every image scores every class 0, the test
    loss is exactly ln(10), and no gradient reaches the classifier to bring it back."""
    from squeezelab.models import create_model

    model = create_model("squeezenet_cifar", **SMALL, classifier_act=True)
    conv10 = model.classifier[1]
    with torch.no_grad():
        conv10.weight.zero_()
        conv10.bias.fill_(-1.0)
    result = train(config(tmp_path, epochs=2), data=cifar_tiny, model=model)
    assert [r["test_loss"] for r in result.history] == pytest.approx([2.302585] * 2, abs=1e-6)
    err = capsys.readouterr().err
    assert err.count("warning: epoch 1: test loss 2.3026 = ln(10), "
                     "the loss of a uniform guess") == 1
    assert "--warmup-epochs 1" in err and "epoch 2" not in err



def test_subset_seed_chooses_the_limited_subset_whatever_the_seed(tmp_path, cifar_tree,
                                                                  monkeypatch):
    """Several seeds can train on one --limit-train subset, and the config records which."""
    import squeezelab.train.data as run_data

    real, picked = run_data.load_split, []

    def recording_load_split(source, split, **kwargs):
        picked.append((split, kwargs["limit"], kwargs["seed"]))
        return real(source, split, **kwargs)

    monkeypatch.setattr(run_data, "load_split", recording_load_split)
    small = dict(epochs=1, data=str(cifar_tree), limit_train=100, limit_test=20, seed=1)
    train(config(tmp_path, **small, run_name="own"))
    result = train(config(tmp_path, **small, subset_seed=0, run_name="shared"))
    assert picked == [("train", 100, 1), ("test", 20, 1), ("train", 100, 0), ("test", 20, 0)]
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert (saved["seed"], saved["subset_seed"]) == (1, 0)


def test_progress_false_also_quiets_the_decoding_bars(tmp_path, cifar_tree, monkeypatch):
    """--progress false is for logs: the data loading that may decode must not draw bars."""
    import squeezelab.train.data as run_data

    real, shown = run_data.load_split, []

    def recording_load_split(source, split, **kwargs):
        shown.append(kwargs["progress"])
        return real(source, split, **kwargs)

    monkeypatch.setattr(run_data, "load_split", recording_load_split)
    small = dict(epochs=1, data=str(cifar_tree), limit_train=100, limit_test=20)
    train(config(tmp_path, **small, run_name="quiet"))
    train(config(tmp_path, **small, progress=True, run_name="shown"))
    assert shown == [False, False, True, True]


def test_run_directory_contents(tmp_path, cifar_tiny):
    result = train(config(tmp_path), data=cifar_tiny)
    run = result.run_dir
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["epochs"] == 2 and saved["model_args"] == SMALL
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for key in ("train_loss", "test_top1", "test_top5", "lr", "images_per_s", "seconds"):
        assert key in lines[-1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_test_top1"] == max(r["test_top1"] for r in lines)
    model, ckpt = model_from_checkpoint(run / "checkpoints" / "last")
    assert ckpt.meta["epoch"] == 2 and ckpt.meta["model"]["name"] == "squeezenet_cifar"
    assert ckpt.meta["class_names"][0] == "airplane"
    best = load_checkpoint(run / "checkpoints" / "best")
    assert best.meta["metrics"]["test_top1"] == summary["best_test_top1"]
    assert torch.equal(model.features[0].weight, result.model.features[0].weight)


def test_ctrl_c_saves_and_resume_reaches_the_same_weights(tmp_path, cifar_tiny):
    # 500 images / 50 = 10 steps per epoch; interrupt in the middle of epoch 2
    straight = train(config(tmp_path, run_name="straight"), data=cifar_tiny)
    cut = train(config(tmp_path, run_name="cut"), hooks=[InterruptAt(14)], data=cifar_tiny)
    assert cut.interrupted
    ckpt = load_checkpoint(cut.run_dir / "checkpoints" / "last")
    assert (ckpt.meta["epoch"], ckpt.meta["batch"], ckpt.meta["step"]) == (1, 4, 14)
    resumed = train(config(tmp_path, run_name="cut"), resume=True, run_dir=cut.run_dir,
                    data=cifar_tiny)
    assert not resumed.interrupted
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resume diverged from the straight run"
    lines = [json.loads(x) for x in (cut.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    # The interrupted epoch's line covers the whole epoch, not only the batches after the
    # resume: the running sums travel in the checkpoint, so it equals the straight run's.
    for key in ("train_loss", "train_top1", "test_top1"):
        assert lines[1][key] == straight.history[1][key], key
    assert ckpt.meta["epoch_sums"]["seen"] == 4 * 50  # the 4 batches before the cut


def test_cutout_runs_and_an_interrupted_run_resumes_to_the_same_weights(tmp_path, cifar_tiny):
    """Cutout draws from its own seeded stream: a run cut in epoch 2 and resumed reaches the
    straight run's weights, and the two differ from a run without Cutout."""
    straight = train(config(tmp_path, run_name="straight", cutout=8), data=cifar_tiny)
    cut = train(config(tmp_path, run_name="cut", cutout=8), hooks=[InterruptAt(14)],
                data=cifar_tiny)
    resumed = train(config(tmp_path, run_name="cut", cutout=8), resume=True,
                    run_dir=cut.run_dir, data=cifar_tiny)
    plain = train(config(tmp_path, run_name="plain"), data=cifar_tiny)
    a, b, c = (r.model.state_dict() for r in (straight, resumed, plain))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert load_checkpoint(straight.run_dir / "checkpoints" / "last").meta["config"]["cutout"] == 8


class PoisonLoss(TrainHook):
    name = "poison"

    def __init__(self, step):
        self.at = step

    def loss(self, state, images, labels, logits, loss):
        return loss * float("nan") if state.step >= self.at else loss


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, cifar_tiny):
    cfg = config(tmp_path, log_every=5)
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 2"):
        train(cfg, hooks=[PoisonLoss(13)], data=cifar_tiny)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert ckpt.meta["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt.model_state.values()
               if v.is_floating_point())


def test_num_classes_mismatch(tmp_path, cifar_tiny):
    cfg = config(tmp_path, model_args={**SMALL, "num_classes": 100})
    with pytest.raises(ConfigError, match="num_classes=100, but the data has 10 classes"):
        train(cfg, data=cifar_tiny)


def test_resume_without_checkpoint(tmp_path, cifar_tiny):
    from squeezelab.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="has no checkpoint"):
        train(config(tmp_path), resume=True, run_dir=tmp_path / "empty", data=cifar_tiny)


def test_a_resume_must_bring_every_method_that_kept_a_state(tmp_path):
    from squeezelab.train.config import ConfigError
    from squeezelab.train.resume import check_resumed_hooks
    from squeezelab.train.run_dir import RunDir

    run = RunDir(tmp_path / "r")
    saved = {"ema": {"updates": 3}, "distill": {"teacher": "t"}, "interrupt": {}}
    tensors = ["model.w", "hook.ema.w", "hook.mask.features.0.weight"]
    # everything that kept a state (meta or tensors) is there; a stateless hook may go
    check_resumed_hooks(saved, tensors, ["ema", "distill", "mask"], run)
    with pytest.raises(ConfigError, match=f"cannot resume {run.path} without distill, mask: "
                                          "the run was trained with these methods"):
        check_resumed_hooks(saved, tensors, ["ema", "interrupt"], run)
    with pytest.raises(ConfigError, match="without mask: the run was trained with it"):
        check_resumed_hooks({}, tensors, ["ema"], run)  # masks keep only tensors


def test_speed_settings_auto_are_resolved_and_recorded(tmp_path, cifar_tiny):
    result = train(config(tmp_path, epochs=1, precision="auto", channels_last=None),
                   data=cifar_tiny)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["precision"] in ("fp32", "bf16") and saved["channels_last"] in (True, False)
    env = json.loads((result.run_dir / "environment.json").read_text())
    assert env["speed_autotune"]["channels_last"] == saved["channels_last"]


def test_choose_run_speed_times_what_train_would_and_creates_no_run(tmp_path, cifar_tiny):
    from squeezelab.train.autotune import native_bf16
    from squeezelab.train.loop import choose_run_speed

    fixed = config(tmp_path, precision="fp32", channels_last=False)
    assert choose_run_speed(fixed, data=cifar_tiny) == {
        "precision": "fp32", "channels_last": False, "timings": {}}
    speed = choose_run_speed(config(tmp_path, precision="auto", channels_last=None),
                             data=cifar_tiny)
    precisions = ["fp32", "bf16"] if native_bf16(torch.device("cpu")) else ["fp32"]
    assert sorted(speed["timings"]) == sorted(f"{p}/{layout}" for p in precisions
                                              for layout in ("nchw", "channels_last"))
    best = min(speed["timings"], key=speed["timings"].get)
    assert best == f"{speed['precision']}/" + (
        "channels_last" if speed["channels_last"] else "nchw")
    # one setting given, only the other is timed
    layout_only = choose_run_speed(config(tmp_path, precision="fp32", channels_last=None),
                                   data=cifar_tiny)
    assert sorted(layout_only["timings"]) == ["fp32/channels_last", "fp32/nchw"]
    assert not any(tmp_path.iterdir())  # no run folder, nothing written


def test_a_finished_run_is_left_alone_and_the_new_run_goes_beside_it(tmp_path, cifar_tiny,
                                                                      capsys):
    """Re-running a recipe that names its run (cifar10_fast) must not fail, nor touch the
    finished run: the new run takes the next free name and says so."""
    train(config(tmp_path, epochs=1), data=cifar_tiny)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    second = train(config(tmp_path, epochs=1), data=cifar_tiny)
    assert second.run_dir == tmp_path / "run-2"
    assert capsys.readouterr().out.splitlines() == [
        f"{tmp_path / 'run'} holds a finished run, left as it is: this run goes to "
        f"{tmp_path / 'run-2'}"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*")
            if p.is_file()} == before
    saved = yaml.safe_load((second.run_dir / "config.yaml").read_text())
    assert saved["run_name"] == "run-2"  # the config says where the run is
    assert (second.run_dir / "summary.json").is_file()
    assert train(config(tmp_path, epochs=1), data=cifar_tiny).run_dir == tmp_path / "run-3"
    # a directory the caller chose is never swapped for another
    with pytest.raises(ConfigError, match="already holds a finished run"):
        train(config(tmp_path, epochs=1), run_dir=tmp_path / "run", data=cifar_tiny)


def test_an_unfinished_run_stops_with_the_command_that_continues_it(tmp_path, cifar_tiny):
    cut = train(config(tmp_path, epochs=1), hooks=[InterruptAt(3)], data=cifar_tiny)
    assert cut.interrupted
    before = (cut.run_dir / "checkpoints" / "last.json").read_bytes()
    with pytest.raises(ConfigError) as error:
        train(config(tmp_path, epochs=1), data=cifar_tiny)
    message = str(error.value)
    assert "\n" not in message
    assert f"{cut.run_dir} holds an unfinished run" in message
    assert f"`squeezelab train --resume {cut.run_dir}`" in message
    assert "--run-name NEW_NAME" in message
    assert (cut.run_dir / "checkpoints" / "last.json").read_bytes() == before
    assert not (tmp_path / "run-2").exists()


def test_best_checkpoint_holds_weights_only(tmp_path, cifar_tiny):
    result = train(config(tmp_path, epochs=1), data=cifar_tiny)
    best = load_checkpoint(result.run_dir / "checkpoints" / "best")
    last = load_checkpoint(result.run_dir / "checkpoints" / "last")
    assert not best.group("optim") and not best.group("rng")
    assert last.group("optim") and last.group("rng")
    assert set(best.tensors) == {f"model.{k}" for k in result.model.state_dict()}


class FirstWeights(TrainHook):
    """Keeps a copy of the model's weights as training starts."""

    name = "first_weights"

    def on_train_start(self, state):
        self.weights = {k: v.clone() for k, v in state.model.state_dict().items()}


def test_init_from_starts_from_the_checkpoints_weights(tmp_path, cifar_tiny, capsys):
    first = train(config(tmp_path, epochs=1, run_name="first"), data=cifar_tiny)
    seen = FirstWeights()
    second = train(config(tmp_path, epochs=1, run_name="second", progress=True, seed=7,
                          init_from=str(first.run_dir)), [seen], data=cifar_tiny)
    best = load_checkpoint(first.run_dir / "checkpoints" / "best").model_state
    assert all(torch.equal(seen.weights[k], v) for k, v in best.items())
    assert f"initial weights from {first.run_dir}" in capsys.readouterr().out
    saved = yaml.safe_load((second.run_dir / "config.yaml").read_text())
    assert saved["init_from"] == str(first.run_dir)  # the run records where it started
    from squeezelab.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="nope.pth does not exist"):
        train(config(tmp_path, run_name="third", init_from=str(tmp_path / "nope.pth")),
              data=cifar_tiny)


def test_skipped_images_are_counted_and_listed_in_the_run(tmp_path, capsys):
    """--skip-bad-images leaves unreadable files out: the run says how many and lists them."""
    from cifar_fixtures import copy_tree

    tree = copy_tree(tmp_path / "tree", 10, 3)
    bad = [tree / "train" / "cat" / "broken.jpg", tree / "test" / "dog" / "empty.jpg"]
    bad[0].write_bytes(b"not a jpeg")
    bad[1].write_bytes(b"")
    result = train(config(tmp_path, epochs=1, data=str(tree), skip_bad_images=True))
    listed = (result.run_dir / "skipped_images.txt").read_text().splitlines()
    assert listed == [str(p) for p in bad]
    err = capsys.readouterr().err
    assert (f"skipped 2 unreadable image(s) (1 train, 1 test): listed in "
            f"{result.run_dir / 'skipped_images.txt'}") in err
    assert json.loads((result.run_dir / "summary.json").read_text())["skipped_images"] == 2
    assert load_checkpoint(result.run_dir / "checkpoints" / "last").meta["skipped_images"] == 2


class UsedLearningRates(TrainHook):
    """The learning rate each optimizer step used (read before the step)."""

    name = "used_lr"

    def __init__(self):
        self.lrs = []

    def after_backward(self, state):
        self.lrs.append(state.optimizer.param_groups[0]["lr"])


def test_resume_with_more_epochs_extends_a_finished_run(tmp_path, cifar_tiny, capsys):
    """--resume RUN --epochs 3 on a finished 2-epoch run: the schedule is laid again over 3
    epochs (not a third epoch at the finished cosine's lr 0), and config.yaml says 3."""
    first = train(config(tmp_path), data=cifar_tiny)
    used = UsedLearningRates()
    capsys.readouterr()
    more = train(config(tmp_path, epochs=3), [used], resume=True, run_dir=first.run_dir,
                 data=cifar_tiny)
    assert len(used.lrs) == 10 and min(used.lrs) > 0
    # cosine over 30 steps after the 0.3-epoch (3-step) warm-up: step 20 is at
    # 0.5 * (1 + cos(pi * 17 / 27)) of the peak
    assert used.lrs[0] == pytest.approx(0.005 * 0.5 * (1 + math.cos(math.pi * 17 / 27)))
    out = capsys.readouterr().out
    assert "epochs 2 -> 3: the learning-rate schedule is laid again" in out
    assert [r["epoch"] for r in more.history] == [1, 2, 3]
    saved = yaml.safe_load((first.run_dir / "config.yaml").read_text())
    assert saved["epochs"] == 3
    assert json.loads((first.run_dir / "summary.json").read_text())["epochs"] == 3
    # another lr with the extension: the new peak, not the checkpoint's, scales the schedule
    used = UsedLearningRates()
    train(config(tmp_path, epochs=4, lr=0.001), [used], resume=True, run_dir=first.run_dir,
          data=cifar_tiny)
    assert used.lrs[0] == pytest.approx(0.001 * 0.5 * (1 + math.cos(math.pi * 27 / 37)))
    assert "lr 0.005 -> 0.001" in capsys.readouterr().out


@pytest.mark.parametrize("change", [
    {"limit_test": 50}, {"test_time_flip": True}, {"subset_seed": 5}, {"seed": 5},
    {"image_size": 28}, {"limit_train": 100}, {"data": "cifar10"}, {"precision": "bf16"},
    {"model_args": {**SMALL, "dropout": 0.0}},
])
def test_resume_refuses_a_change_of_images_or_scoring(tmp_path, cifar_tiny, change):
    """A resumed run keeps the images it trains on and is scored on, and its scoring: a best
    score measured otherwise would not compare with the saved one. Refused before any data
    is loaded, naming the flag; best.* is untouched."""
    run_dir = tmp_path / "done"
    run_dir.mkdir()
    (run_dir / "checkpoints").mkdir()
    saved = config(tmp_path).to_dict()
    (run_dir / "checkpoints" / "last.json").write_text(json.dumps({"config": saved}))
    name = next(iter(change))
    shown = "seed/subset_seed" if name in ("seed", "subset_seed") else name
    with pytest.raises(ConfigError, match=f"cannot resume {run_dir} with {shown} .*"
                                          f"--init-from {run_dir}"):
        train(config(tmp_path, **change), resume=True, run_dir=run_dir, data=cifar_tiny)


def test_resume_keeps_the_best_checkpoint_of_the_same_scoring(tmp_path, cifar_tiny):
    """"auto" speed settings on resume take the run's own (no new protocol by autotuning)."""
    first = train(config(tmp_path), data=cifar_tiny)
    best = (first.run_dir / "checkpoints" / "best.json").read_bytes()
    again = train(config(tmp_path, precision="auto", channels_last=None), resume=True,
                  run_dir=first.run_dir, data=cifar_tiny)
    assert not again.interrupted
    assert (first.run_dir / "checkpoints" / "best.json").read_bytes() == best
    assert yaml.safe_load((first.run_dir / "config.yaml").read_text())["precision"] == "fp32"


def test_a_summary_is_printed_before_the_first_epoch(tmp_path, cifar_tiny, capsys):
    result = train(config(tmp_path, epochs=1, progress=True, precision="auto",
                          channels_last=None, lr=None, optimizer=None,
                          weight_decay=None, schedule=None, warmup_epochs=0.0,
                          label_smoothing=None), data=cifar_tiny)
    out = capsys.readouterr().out
    summary = out[:out.index("epoch   1/1")].splitlines()
    speed = json.loads((result.run_dir / "environment.json").read_text())["speed_autotune"]
    assert summary[0].startswith(f"data      {cifar_tiny[0].source}: 500 train / 100 test "
                                 "images, 10 classes, 32x32")
    params = sum(p.numel() for p in result.model.parameters())
    assert re.fullmatch(f"model     squeezenet_cifar: {params:,} parameters, "
                        r"\d+\.\dM MACs per image", summary[1])
    assert summary[2] == (
        "settings  optimizer adamw, lr 0.005, weight_decay 0.05, schedule cosine, "
        "warmup_epochs 0, label_smoothing 0.1 (optimizer, lr, weight_decay, schedule, "
        "label_smoothing: squeezenet_cifar's defaults)")
    layout = "channels_last" if speed["channels_last"] else "NCHW"
    assert summary[3].startswith(f"speed     {speed['precision']}, {layout} on cpu (timed per "
                                 "step: fp32/nchw ")
    assert summary[4] == f"run       1 epoch of batch 50 (10 steps each) -> {result.run_dir}"
    train(config(tmp_path, epochs=1, run_name="quiet"), data=cifar_tiny)  # progress off
    assert capsys.readouterr().out == ""


def test_the_default_model_learns_without_a_recipe(tmp_path, cifar_small):
    """No optimizer settings given: the model's own defaults (recipes/cifar10_fast.yaml's)
    apply, and the default model learns. The old built-in defaults (Nesterov at lr 0.1, no
    warm-up) sent its first-epoch loss above ln(10), as a user found at 10% after 2 epochs."""
    bare = TrainConfig(model="squeezenet_cifar", model_args=SMALL, epochs=2, batch_size=32,
                       precision="fp32", channels_last=False, out_dir=str(tmp_path),
                       run_name="bare", progress=False)
    assert bare.defaults_from_model == {
        "optimizer": "adamw", "lr": 0.005, "weight_decay": 0.05, "schedule": "cosine",
        "warmup_epochs": 0.3, "label_smoothing": 0.1}
    learned = train(bare, data=cifar_small)
    # 300 test images: chance is 0.10 with a standard deviation of 0.017
    assert learned.final["test_top1"] > 0.18, learned.history
    old = train(bare.replace(optimizer="nesterov", lr=0.1, weight_decay=5e-4,
                             warmup_epochs=0.0, label_smoothing=0.0, run_name="old"),
                data=cifar_small)
    assert old.history[0]["train_loss"] > math.log(10) > learned.history[0]["train_loss"]


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixed_batches_train_and_an_interrupted_run_resumes_to_the_same_weights(
        tmp_path, cifar_tiny, mode):
    """Batch mixing draws each batch's mix from its own key: a run cut in epoch 2 and resumed
    reaches the straight run's weights; the train top-1 counts the share of each blended
    target the guess gets; the last mix_off_epochs train unmixed."""
    mix = dict(mix=mode, mix_alpha=1.0)
    straight = train(config(tmp_path, run_name="straight", **mix), data=cifar_tiny)
    cut = train(config(tmp_path, run_name="cut", **mix), hooks=[InterruptAt(14)],
                data=cifar_tiny)
    resumed = train(config(tmp_path, run_name="cut", **mix), resume=True,
                    run_dir=cut.run_dir, data=cifar_tiny)
    a, b = (r.model.state_dict() for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(x) for x in (cut.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[1]["train_top1"] == straight.history[1]["train_top1"]
    assert all(0 < h["train_top1"] < 1 and math.isfinite(h["train_loss"])
               for h in straight.history)
    # the last epoch unmixed: epoch 1 as the straight run's, epoch 2 not (mixing changes
    # what is learnt)
    off = train(config(tmp_path, run_name="off", mix_off_epochs=1, **mix), data=cifar_tiny)
    assert off.history[0]["train_loss"] == straight.history[0]["train_loss"]
    assert off.history[1]["train_loss"] != straight.history[1]["train_loss"]
    assert load_checkpoint(off.run_dir / "checkpoints" / "last").meta["config"]["mix"] == mode


class LabelsSeen(TrainHook):
    name = "labels_seen"

    def __init__(self):
        self.shapes = []

    def loss(self, state, images, labels, logits, loss):
        self.shapes.append((tuple(labels.shape), labels.dtype))
        return loss


def test_hooks_see_class_probabilities_while_batches_are_mixed(tmp_path, cifar_tiny):
    seen = LabelsSeen()
    train(config(tmp_path, mix="cutmix", mix_off_epochs=1), hooks=[seen], data=cifar_tiny)
    # 10 steps an epoch: the first epoch mixed (50 x 10 probabilities), the second not
    assert seen.shapes[:10] == [((50, 10), torch.float32)] * 10
    assert seen.shapes[10:] == [((50,), torch.int64)] * 10


def test_mixing_learns_above_chance_on_real_images(tmp_path, cifar_small):
    result = train(config(tmp_path, epochs=4, mix="mixup", mix_alpha=0.2), data=cifar_small)
    assert result.final["test_top1"] > 0.20, result.history
