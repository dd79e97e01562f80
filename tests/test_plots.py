"""Training curves of recorded runs (``squeezelab plot``): drawn against the epoch, the fraction
of each run's schedule (runs of different lengths line up) or the hours each took, from the
run folder's metrics.jsonl and config.yaml alone."""
from __future__ import annotations

import pytest
import yaml
from fake_runs import fake_run

from squeezelab.cli import main
from squeezelab.plots import X_AXES, plot_runs, run_curves

PNG = b"\x89PNG\r\n\x1a\n"


def test_curves_against_the_epoch_keep_every_epoch_and_the_scored_ones(tmp_path):
    c = run_curves(fake_run(tmp_path / "a", epochs=8, logged=4))
    assert c["x"] == [1.0, 2.0, 3.0, 4.0]
    assert c["train_loss"] == [2.0, 1.0, 2.0 / 3, 0.5]
    assert c["train_top1"] == pytest.approx([10, 20, 30, 40])
    assert c["test_x"] == [2.0, 4.0]
    assert c["test_loss"] == [0.75, 0.375] and c["test_top1"] == pytest.approx([18, 36])


def test_runs_of_different_lengths_line_up_on_the_fraction_of_their_schedules(tmp_path):
    short = run_curves(fake_run(tmp_path / "short", epochs=150, logged=75), "fraction")
    long = run_curves(fake_run(tmp_path / "long", epochs=200, logged=100), "fraction")
    # halfway through each schedule: epoch 75 of 150 and epoch 100 of 200
    assert short["x"][-1] == long["x"][-1] == 0.5
    assert short["x"][0] == 1 / 150 and long["test_x"][0] == 2 / 200


def test_hours_add_up_each_epochs_training_and_scoring_time(tmp_path):
    c = run_curves(fake_run(tmp_path / "a", epochs=8, logged=4, seconds=900.0,
                            eval_seconds=1800.0), "hours")
    # 0.25 h an epoch, and half an hour more after each scored one (epochs 2 and 4)
    assert c["x"] == pytest.approx([0.25, 1.0, 1.25, 2.0])
    assert c["test_x"] == pytest.approx([1.0, 2.0])


@pytest.mark.parametrize("x", sorted(X_AXES))
def test_plot_command_draws_two_runs_against_each_axis(tmp_path, x, capsys):
    a = fake_run(tmp_path / "a", epochs=150, logged=6)
    b = fake_run(tmp_path / "b", epochs=200, logged=8, score_every=3)
    png = tmp_path / f"curves-{x}.png"
    assert main(["plot", str(a), str(b), "--x", x, "-o", str(png)]) == 0
    assert f"wrote {png}" in capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000


def test_bad_axes_and_runs_are_refused_with_the_reason(tmp_path, capsys):
    run = fake_run(tmp_path / "a", epochs=8, logged=2)
    with pytest.raises(ValueError, match=r"x must be one of \['epoch', 'fraction', 'hours'\], "
                                         r"got 'step'"):
        run_curves(run, "step")
    with pytest.raises(SystemExit) as exit_:
        main(["plot", str(run), "--x", "step"])
    # the command offers exactly the axes the plot knows
    offered = ", ".join(repr(name) for name in X_AXES)
    assert exit_.value.code == 2
    assert f"invalid choice: 'step' (choose from {offered})" in capsys.readouterr().err

    (run / "config.yaml").write_text(yaml.safe_dump({"lr": 0.1}))
    with pytest.raises(ValueError, match="config.yaml names no epoch count .epochs: None.: "
                                         "cannot draw it against the fraction"):
        run_curves(run, "fraction")
    assert run_curves(run, "epoch")["x"] == [1.0, 2.0]  # the epoch axis needs no config

    (run / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="is not a run directory: .*config.yaml does "
                                                "not exist"):
        run_curves(run, "fraction")

    (run / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="metrics.jsonl holds no epochs yet"):
        plot_runs([run], tmp_path / "never.png")
    assert not (tmp_path / "never.png").exists()
