"""Training to a time budget (train/time_budget.py): the epochs a machine fits after timing the
first, the schedule laid again over them, and a run that stops where its budget says, scored,
saved and resumable."""
import json
import math

import pytest
import torch
from model_configs import small_run

from squeezelab.train import ConfigError, TrainConfig, train
from squeezelab.train.optim import build_scheduler, lr_factor, refit_scheduler_
from squeezelab.train.time_budget import (
    FORWARD_SHARE,
    budget_warmup,
    fit_epochs,
    scoring_views,
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
