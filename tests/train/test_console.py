"""What a run prints (``train/console.py``): the epoch line's estimate of the time left, and
how each method describes itself on the summary's ``methods`` line."""
import pytest
import torch

from squeezelab.train.config import TrainConfig
from squeezelab.train.console import format_duration, print_epoch, seconds_left


def _epoch(epoch, seconds, eval_seconds=None):
    record = {"epoch": epoch, "seconds": seconds, "train_loss": 1.0, "train_top1": 0.5,
              "lr": 0.1, "images_per_s": 500.0}
    if eval_seconds is not None:
        record.update(eval_seconds=eval_seconds, test_top1=0.8, test_top5=0.9, test_loss=0.5)
    return record


def test_seconds_left_is_the_median_epoch_times_the_epochs_left_plus_the_scorings():
    cfg = TrainConfig(epochs=20, eval_every=5)
    # a slow first epoch (warming up) and one slowed by other work do not move the median
    history = [_epoch(1, 300.0), _epoch(2, 100.0), _epoch(3, 100.0), _epoch(4, 500.0),
               _epoch(5, 102.0, eval_seconds=30.0), _epoch(6, 98.0)]
    # 14 epochs left at the median 101 s; scorings left at 10, 15, 20 at the mean 30 s
    assert seconds_left(history, cfg) == pytest.approx(14 * 101.0 + 3 * 30.0)


def test_seconds_left_counts_the_last_epoch_scoring_and_only_the_last_ten_epochs():
    cfg = TrainConfig(epochs=30, eval_every=7)
    history = [_epoch(e, 1000.0) for e in range(1, 11)] + [_epoch(e, 50.0)
                                                            for e in range(11, 21)]
    # the last ten epochs only (50 s); scorings left at 21, 28 and the last epoch, 30; none
    # scored yet, so they count nothing
    assert seconds_left(history, cfg) == pytest.approx(10 * 50.0)
    assert seconds_left([], cfg) is None
    assert seconds_left([_epoch(30, 50.0, eval_seconds=9.0)], cfg) == 0.0


def test_seconds_left_under_progressive_resizing_scales_the_epochs_by_their_pixels():
    # 9 epochs at 16, 24, 32 px in thirds; the two 16 px epochs took 10 s, so 1/25.6 s a pixel
    cfg = TrainConfig(epochs=9, eval_every=9, progressive_sizes=[16, 24, 32])
    history = [_epoch(1, 10.0), _epoch(2, 10.0)]
    assert seconds_left(history, cfg) == pytest.approx(10.0 * (1 + 3 * 2.25 + 3 * 4))
    # a size's own epochs count as themselves
    history += [_epoch(3, 10.0), _epoch(4, 22.5)]
    assert seconds_left(history, cfg) == pytest.approx(10.0 * (2 * 2.25 + 3 * 4))


@pytest.mark.parametrize("seconds,text", [
    (0.0, "<1m"), (29.0, "<1m"), (31.0, "1m"), (12 * 60.0, "12m"), (59 * 60 + 40, "1h00m"),
    (4 * 3600 + 58 * 60, "4h58m"), (30 * 3600.0, "30h00m"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_the_epoch_line_says_the_time_left_until_the_last_epoch(capsys):
    cfg = TrainConfig(epochs=3, eval_every=10)
    history = [_epoch(1, 120.0)]
    print_epoch(history[-1], cfg, history)
    # two epochs at 120 s; the last epoch is scored, but no scoring has been timed yet
    assert capsys.readouterr().out.rstrip().endswith("120.0s  ~4m left")
    history += [_epoch(2, 120.0), _epoch(3, 120.0, eval_seconds=10.0)]
    print_epoch(history[-1], cfg, history)
    assert capsys.readouterr().out.rstrip().endswith("120.0s")


def test_each_method_names_its_settings_for_the_summary():
    from squeezelab.compress.pruning.masks import MaskHook
    from squeezelab.compress.quantization.binary import BinaryClipHook
    from squeezelab.hooks import TrainHook
    from squeezelab.train.pgd import PerturbedGradientHook
    from squeezelab.train.regularizers import L1Regularizer

    half = torch.tensor([True, False, True, False])
    assert MaskHook({"a.weight": half, "b.weight": torch.ones(4, dtype=torch.bool)}
                    ).describe() == "mask (2 tensors, 25.0% pruned)"
    assert MaskHook().describe() == "mask (none yet)"  # DSD's dense phase, or masks to come
    assert BinaryClipHook(1.5).describe() == "binary_clip (bound 1.5)"
    assert L1Regularizer(1e-4).describe() == "l1 (weight 0.0001)"
    assert PerturbedGradientHook(0.001, 0.01, interval=10).describe() == (
        "pgd (radius 0.001 below gradient norm 0.01, at most every 10 steps)")
    assert TrainHook().describe() == "hook"  # a hook without settings: its name
