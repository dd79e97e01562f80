"""Training to a time budget (train/time_budget.py): the epochs a machine fits after timing the
first (and a step at each progressive size), the schedule laid again over them, the plan cut
after a later epoch where the machine slowed, and a run that stops where its budget says,
scored, saved and resumable."""
import json
import math
import time

import pytest
import torch
from hook_checks import InterruptAt
from model_configs import small_run

from squeezelab.hooks import TrainHook
from squeezelab.train import ConfigError, TrainConfig, train
from squeezelab.train.optim import build_scheduler, lr_factor, refit_scheduler_
from squeezelab.train.time_budget import (
    FORWARD_SHARE,
    BudgetChecks,
    budget_warmup,
    fit_epochs,
    scoring_views,
    step_seconds_by_size,
)


def budget_cfg(**changes):
    base = dict(epochs=10, warmup_epochs=0.5, eval_every=100, time_budget=100.0)
    return TrainConfig(**{**base, **changes})


def test_the_epochs_that_fit_are_counted_with_the_final_scoring():
    # 10 s an epoch over 1,000 images; 500 test images once, at a third of a step per image
    cfg = budget_cfg()
    fit = fit_epochs(cfg, 10.0, 1000, 500)
    assert fit.eval_seconds == pytest.approx(10.0 / 1000 * FORWARD_SHARE * 500)
    # e epochs cost 10 e + 1.67: 9 fit in 100 s, 10 do not
    assert fit.epochs == 9 and fit.asked == 10
    assert fit.estimated_seconds == pytest.approx(90 + fit.eval_seconds)
    # scored every epoch, flip-averaged (2 views): 10 e + 3.33 e -> 7 epochs
    fit = fit_epochs(budget_cfg(eval_every=1, test_time_flip=True), 10.0, 1000, 500)
    assert fit.epochs == 7 and scoring_views(budget_cfg(test_time_flip=True,
                                                     test_time_translate=2)) == 6
    # a budget larger than the recipe keeps every epoch; a tiny one keeps one, and the warm-up
    # keeps its share of the schedule (2 of 10 epochs: a fifth of the one kept)
    assert fit_epochs(budget_cfg(time_budget=1e6), 10.0, 1000, 500).epochs == 10
    tiny = budget_cfg(time_budget=1.0, warmup_epochs=2)
    assert fit_epochs(tiny, 10.0, 1000, 500).epochs == 1
    assert budget_warmup(tiny, 1) == pytest.approx(0.2) and budget_warmup(tiny, 10) == 2
    # time spent before (a resumed first epoch, say) counts
    assert fit_epochs(cfg, 10.0, 1000, 500, spent=50.0).epochs == 5


def test_progressive_resizing_makes_later_epochs_dearer():
    # half the epochs at 16 px (the timed one), half at 32 px: four times the pixels
    cfg = budget_cfg(progressive_sizes=[16, 32], time_budget=100.0, epochs=10)
    fit = fit_epochs(cfg, 5.0, 1000, 0)
    # 4 epochs: 5 + 5 + 20 + 20 = 50; 6: 5 + 2 * 5 + 3 * 20 = 75; 7: 5 + 3 * 5 + 3 * 20 = 80
    # (size_for_epoch gives 7 epochs 4 small ones); 8: 5 + 3 * 5 + 4 * 20 = 100
    assert fit.epochs == 8 and fit.estimated_seconds == pytest.approx(100.0)


def test_timed_steps_at_each_size_scale_the_epochs_and_the_scoring():
    # a 32 px step timed at 2.2x a 16 px one (not the pixels' 4x): the later epochs cost 11 s,
    # and scoring at the images' own size (None: 32 px) 2.2x the first epoch's per image
    cfg = budget_cfg(progressive_sizes=[16, 32], time_budget=100.0, epochs=10)
    timed = {None: 0.22, 16: 0.1, 32: 0.22}
    fit = fit_epochs(cfg, 5.0, 1000, 300, step_seconds=timed)
    assert fit.eval_seconds == pytest.approx(5.0 / 1000 * FORWARD_SHARE * 300 * 2.2)
    # 10 epochs: 5 + 4 * 5 + 5 * 11 + 1.1 = 81.1 s, all fit (by the pixels only 8 would:
    # 5 + 3 * 5 + 4 * 20 = 100 before the scoring)
    assert fit.epochs == 10 and fit.estimated_seconds == pytest.approx(81.1)
    # where steps at the big size cost more than the pixels say, fewer epochs fit than they say
    # (5x: 25 s): 7 epochs, 5 + 3 * 5 + 3 * 25 = 95 s, where the pixels fit 8 (100 s); at
    # 8 epochs the timed cost would be 5 + 3 * 5 + 4 * 25 = 120 s
    dear = fit_epochs(cfg, 5.0, 1000, 0, step_seconds={None: 0.5, 16: 0.1, 32: 0.5})
    assert dear.epochs == 7 and dear.estimated_seconds == pytest.approx(95.0)
    # the timings are saved (JSON keys) and said
    saved = fit.to_dict()["step_seconds"]
    assert saved == {"images": 0.22, "16": 0.1, "32": 0.22}
    assert fit.describe().endswith("a training step takes 0.10 s at 16 px, 0.22 s at 32 px")
    other = fit_epochs(cfg.replace(progressive_sizes=[16, 24]), 5.0, 1000, 300,
                       step_seconds={None: 0.3, 16: 0.1, 24: 0.2})
    assert other.describe().endswith(
        "a training step takes 0.10 s at 16 px, 0.20 s at 24 px, 0.30 s at the images' own size")
    assert fit_epochs(budget_cfg(), 10.0, 1000, 500).to_dict()["step_seconds"] is None


def test_steps_are_timed_at_each_size_on_a_copy_that_leaves_the_run_untouched():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Dropout(0.5), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    rng = torch.get_rng_state()
    seconds = step_seconds_by_size(model, images, labels, "fp32", False, [8, 12, 16, 12])
    assert list(seconds) == [None, 8, 12, 16] and all(s > 0 for s in seconds.values())
    assert seconds[16] == seconds[None]  # the images' own size is timed once
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm's statistics too
    assert all(p.grad is None for p in model.parameters())


def test_a_later_check_counts_what_is_spent_and_only_the_epochs_left():
    cfg = budget_cfg(epochs=10, time_budget=100.0, eval_every=5)
    # 5 epochs done in 52 s, the 5th scored at 2 s a scoring (measured); the machine slowed to
    # 12 s an epoch: 52 + 2 (epoch 5's scoring) + 12 k + 2 (the last) <= 100 -> k = 3
    fit = fit_epochs(cfg, 12.0, 1000, 500, spent=52.0, done=5, eval_seconds=2.0)
    assert (fit.epochs, fit.after_epoch, fit.eval_seconds) == (8, 5, 2.0)
    assert fit.estimated_seconds == pytest.approx(52 + 2 + 36 + 2)
    assert fit.describe() == ("time budget 100 s: epoch 5 took 12.0 s, so 8 of the 10 planned "
                              "epochs fit (about 92 s with scoring)")
    # over budget already: stop after the epoch just trained (it is scored as the last)
    assert fit_epochs(cfg, 12.0, 1000, 500, spent=150.0, done=5).epochs == 5
    # under progressive resizing the epoch timed is the last one, at its own size: 24 px here
    # (epoch 4 of 9 at 16/24/32 px), so the 32 px epochs cost 0.2 / 0.1 of it
    sized = budget_cfg(epochs=9, progressive_sizes=[16, 24, 32], time_budget=100.0)
    timed = {None: 0.2, 16: 0.05, 24: 0.1, 32: 0.2}
    fit = fit_epochs(sized, 4.0, 1000, 0, spent=20.0, step_seconds=timed, done=4)
    # 20 + 2 * 4 (epochs 5-6 at 24 px) + 3 * 8 (7-9 at 32 px) = 52
    assert fit.epochs == 9 and fit.estimated_seconds == pytest.approx(52.0)
    with pytest.raises(ValueError, match=r"done must be in \[1, epochs=9\], got 10"):
        fit_epochs(sized, 4.0, 1000, 0, done=10)


def test_a_later_check_grows_the_plan_by_one_where_it_fits_with_an_epoch_to_spare():
    cfg = budget_cfg(epochs=8, time_budget=100.0)
    # 4 of 8 done in 40 s, 8 s an epoch now: 8 epochs cost 72 s, 9 cost 80 + 8 to spare <= 100;
    # 10 (88 + 8) would fit too, but the plan grows one epoch a check
    grown = fit_epochs(cfg, 8.0, 1000, 0, spent=40.0, done=4, most=12)
    assert (grown.epochs, grown.asked) == (9, 8)
    assert grown.describe() == ("time budget 100 s: epoch 4 took 8.0 s, so there is time for 9 "
                                "epochs, not 8 (about 80 s with scoring)")
    # the next check grows it again: 48 + 5 * 8 = 88, + 8 to spare
    assert fit_epochs(cfg.replace(epochs=9), 8.0, 1000, 0, spent=48.0, done=5,
                      most=12).epochs == 10
    # never past the recipe's epochs, nor without the margin (62 + 40 > 100), nor after the
    # plan's last epoch
    assert fit_epochs(cfg, 8.0, 1000, 0, spent=40.0, done=4, most=8).epochs == 8
    assert fit_epochs(cfg, 8.0, 1000, 0, spent=62.0, done=4, most=12).epochs == 8
    assert fit_epochs(cfg, 8.0, 1000, 0, spent=40.0, done=8, most=12).epochs == 8
    # and without ``most`` (the first fit) never
    assert fit_epochs(cfg, 8.0, 1000, 0, spent=40.0, done=4).epochs == 8


def test_the_budget_record_keeps_the_first_fit_and_the_changes_and_reads_back():
    first = fit_epochs(budget_cfg(progressive_sizes=[16, 32]), 5.0, 1000, 0,
                       step_seconds={None: 0.2, 16: 0.1, 32: 0.2}).to_dict()
    cut = fit_epochs(budget_cfg(epochs=9), 30.0, 1000, 0, spent=50.0, done=3).to_dict()
    checks = BudgetChecks(fits=[first, cut], step_seconds={None: 0.2, 16: 0.1, 32: 0.2})
    record = json.loads(json.dumps(checks.record(cut["epochs"])))
    assert record["epochs"] == cut["epochs"] == 4 and record["changes"] == [cut]
    assert record["asked"] == 10 and record["after_epoch"] == 1
    again = BudgetChecks.from_record(record)
    assert again.fits == [{**first, "epochs": 4}, cut]
    assert again.step_seconds == {None: 0.2, 16: 0.1, 32: 0.2}
    assert BudgetChecks.from_record(BudgetChecks(fits=[cut]).record(4)) == BudgetChecks(
        fits=[cut])


class _StallsInEpoch(TrainHook):
    """Sleeps ``seconds`` once, after the first step of (0-based) ``epoch``: a machine slowed
    by work beside the run."""

    name = "stall"

    def __init__(self, epoch: int, seconds: float):
        self.epoch, self.seconds, self.slept = epoch, seconds, False

    def after_step(self, state):
        if state.epoch == self.epoch and not self.slept:
            self.slept = True
            time.sleep(self.seconds)


def _hundred_images(cifar_tiny):
    """(train, test) of 100 and 50 images: two steps of batch 50 an epoch, 0.25-0.35 s on two
    cores, so that a stall of a second or two decides the budget's arithmetic."""
    return tuple(split.subset(torch.arange(n)) for split, n in zip(cifar_tiny, (100, 50)))


def test_a_machine_that_slows_in_the_middle_of_a_run_has_its_plan_cut(tmp_path, cifar_tiny):
    # a 4 s budget: after epoch 1 all six epochs fit. Epoch 3 stalls 2 s, so after it the
    # stall and 3 epochs are spent, and another epoch timed like it (2 s and more) would pass 4 s
    cfg = small_run(tmp_path, epochs=6, time_budget=4.0, eval_every=100, warmup_epochs=0)
    result = train(cfg, [_StallsInEpoch(2, 2.0)], data=_hundred_images(cifar_tiny))
    fit = json.loads((result.run_dir / "time_budget.json").read_text())
    assert (fit["after_epoch"], fit["asked"], fit["epochs"]) == (1, 6, 3)
    assert [(c["after_epoch"], c["asked"], c["epochs"]) for c in fit["changes"]] == [(3, 6, 3)]
    assert fit["changes"][0]["epoch_seconds"] >= 2.0
    assert len(result.history) == 3 and "test_top1" in result.history[-1]  # the last, scored
    assert "epochs: 3" in (result.run_dir / "config.yaml").read_text()


def test_a_plan_made_after_a_slow_first_epoch_grows_back_to_the_recipe(tmp_path, cifar_tiny):
    # the first epoch stalls 2 s: after it 3-4 epochs like it fit in 10 s, not 6. The later
    # epochs leave room, and the plan grows by one a check
    cfg = small_run(tmp_path, epochs=6, time_budget=10.0, eval_every=100, warmup_epochs=0)
    result = train(cfg, [_StallsInEpoch(0, 2.0)], data=_hundred_images(cifar_tiny))
    fit = json.loads((result.run_dir / "time_budget.json").read_text())
    planned = [c["epochs"] for c in fit["changes"]]
    assert fit["after_epoch"] == 1 and 3 <= fit["changes"][0]["asked"] < 6
    assert planned == list(range(fit["changes"][0]["asked"] + 1, 7))  # one at a time, to 6
    assert fit["epochs"] == len(result.history) == 6
    assert "test_top1" in result.history[-1] and "epochs: 6" in (
        result.run_dir / "config.yaml").read_text()


def test_a_resumed_run_checks_its_budget_with_the_first_process_timings(tmp_path, cifar_tiny):
    # interrupted in epoch 2 (after the first fit, which timed steps at 24 and 32 px), then
    # resumed on a machine that stalls in epoch 3: the cut goes into the same record
    data = _hundred_images(cifar_tiny)
    cfg = small_run(tmp_path, epochs=6, time_budget=6.0, eval_every=100, warmup_epochs=0,
                    progressive_sizes=[24, 32], run_name="cut")
    cut = train(cfg, [InterruptAt(3)], data=data)
    assert cut.interrupted
    first = json.loads((cut.run_dir / "time_budget.json").read_text())
    assert (first["epochs"], first["changes"]) == (6, []) and sorted(first["step_seconds"]) == [
        "24", "32", "images"]
    resumed = train(cfg, [_StallsInEpoch(2, 3.0)], resume=True, run_dir=cut.run_dir, data=data)
    fit = json.loads((resumed.run_dir / "time_budget.json").read_text())
    assert {k: v for k, v in fit.items() if k not in ("epochs", "changes")} == {
        k: v for k, v in first.items() if k not in ("epochs", "changes")}
    assert [(c["after_epoch"], c["epochs"]) for c in fit["changes"]] == [(3, 3)]
    assert fit["changes"][0]["step_seconds"] == first["step_seconds"]
    assert fit["epochs"] == len(resumed.history) == 3


def test_a_size_timed_slow_once_keeps_its_quickest_timing(monkeypatch):
    # two rounds over the sizes; the 28 px step's first timing hit work beside the run
    timings = {32: [0.64, 0.66], 24: [0.30, 0.29], 28: [0.95, 0.47]}
    calls = []

    def fake_time_steps(model, images, labels, precision, channels_last, steps):
        size = images.shape[-1]
        calls.append(size)
        return timings[size].pop(0)

    monkeypatch.setattr("squeezelab.train.time_budget.time_steps", fake_time_steps)
    images = torch.zeros(4, 3, 32, 32)
    seconds = step_seconds_by_size(torch.nn.Identity(), images, torch.zeros(4), "fp32", False,
                                   [24, 28, 32])
    assert seconds == {None: 0.64, 24: 0.29, 28: 0.47, 32: 0.64}
    assert calls == [32, 24, 28, 32, 24, 28]  # in turn, the images' own size once a round


def test_a_budget_must_be_positive_seconds():
    with pytest.raises(ConfigError, match="time_budget must be a number of seconds > 0"):
        TrainConfig(time_budget=0)
    with pytest.raises(ConfigError, match="time_budget must be a number of seconds > 0"):
        TrainConfig(time_budget=True)
    with pytest.raises(ValueError, match="needs a config with a time_budget"):
        fit_epochs(TrainConfig(), 1.0, 10, 10)


def test_refitting_the_schedule_lays_it_over_the_new_epochs_from_the_current_step():
    cfg = TrainConfig(epochs=10, schedule="cosine", warmup_epochs=0, lr=0.1, optimizer="sgd")
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=0.1)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    sched.lr_lambdas.append(sched.lr_lambdas[0])  # a hook's group that follows the run's
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.2,
                         "initial_lr": 0.2})
    sched.base_lrs.append(0.2)
    for _ in range(4):
        opt.step()
        sched.step()
    short = cfg.replace(epochs=3)
    refit_scheduler_(sched, short, 4)
    expected = lr_factor(4, 12, 4, short)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * expected, 0.2 * expected])
    for _ in range(8):
        opt.step()
        sched.step()
    assert sched.get_last_lr() == pytest.approx([0.0, 0.0], abs=1e-12)  # the cosine's end
    assert math.isclose(sched.lr_lambdas[1](6), lr_factor(6, 12, 4, short))


def test_a_run_stops_where_its_budget_says_scored_saved_and_resumable(tmp_path, cifar_tiny):
    # an impossibly small budget: one epoch is kept of five, and it is scored; the warm-up
    # keeps its share (2.5 of 5 epochs: half of the one kept)
    cfg = small_run(tmp_path, epochs=5, time_budget=0.01, eval_every=10, warmup_epochs=2.5)
    result = train(cfg, data=cifar_tiny)
    assert [r["epoch"] for r in result.history] == [1]
    assert "test_top1" in result.history[0]
    run = result.run_dir
    fit = json.loads((run / "time_budget.json").read_text())
    assert (fit["asked"], fit["epochs"], fit["cut_short"]) == (5, 1, True)
    assert "epochs: 1" in (run / "config.yaml").read_text()
    meta = json.loads((run / "checkpoints" / "last.json").read_text())
    assert meta["config"]["epochs"] == 1 and meta["scheduler"]["last_epoch"] == 10
    assert meta["config"]["warmup_epochs"] == 0.5 and "warmup_epochs: 0.5" in (
        run / "config.yaml").read_text()
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1
    # under progressive resizing the steps at each size are timed after the first epoch, and
    # the fit says so
    sized = train(small_run(tmp_path, epochs=2, time_budget=1e6, run_name="sized",
                            progressive_sizes=[24, 32]), data=cifar_tiny)
    timed = json.loads((sized.run_dir / "time_budget.json").read_text())["step_seconds"]
    assert sorted(timed) == ["24", "32", "images"] and timed["32"] == timed["images"]
    # a budget that holds every epoch changes nothing
    full = train(small_run(tmp_path, epochs=2, time_budget=1e6, run_name="full"),
                 data=cifar_tiny)
    assert len(full.history) == 2
    assert json.loads((full.run_dir / "time_budget.json").read_text())["epochs"] == 2


def test_a_machine_that_fits_under_half_the_epochs_is_told_to_expect_less():
    # 10 s an epoch: 9 of 10 fit in 100 s (no note); 4 of 10 fit in 45 s (the note)
    most = fit_epochs(budget_cfg(), 10.0, 1000, 500)
    assert not most.cut_short and "note:" not in most.describe()
    few = fit_epochs(budget_cfg(time_budget=45.0), 10.0, 1000, 500)
    assert few.epochs == 4 and few.cut_short
    first, note = few.describe().split("\n")
    assert first.startswith("time budget 45 s: the first epoch took 10.0 s, so 4 of 10 epochs fit")
    assert note.startswith("note: fewer than half the recipe's epochs fit")
    # exactly half is not short
    assert not fit_epochs(budget_cfg(time_budget=52.0), 10.0, 1000, 500).cut_short
