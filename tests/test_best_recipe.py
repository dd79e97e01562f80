"""The best-accuracy recipe (recipes/cifar10_best.yaml): it trains in pieces, on CIFAR-10 and
on CIFAR-100 where that archive is, and benchmarks/long_run.py accounts for what the pieces
cost -- on tiny slices, a few steps each."""
import dataclasses
import json
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark
from cifar_fixtures import write_cifar_archive
from fake_runs import fake_run

from squeezelab.cli import main
from squeezelab.data.cifar import CIFAR_SPECS, file_md5
from squeezelab.train import TrainConfig, train

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "cifar10_best.yaml"
TINY = ["--limit-train", "100", "--limit-test", "40", "--batch-size", "50",
        "--warmup-epochs", "0.5", "--eval-every", "1", "--precision", "fp32",
        "--channels-last", "false", "--progress", "false"]


def test_the_recipe_trains_in_pieces_and_the_record_adds_them_up(tmp_path, cifar_tree):
    run = tmp_path / "best"
    assert main(["train", str(RECIPE), "--data", str(cifar_tree), "--epochs", "1",
                 "--out-dir", str(tmp_path), "--run-name", "best", *TINY]) == 0
    # the second piece: the finished run extended by one epoch, as an interrupted one resumes
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]

    bench = load_benchmark("long_run")
    out = tmp_path / "record.json"
    assert bench.main([str(run), "--target-top1", "0.0", "--budget-hours", "8",
                       "--output", str(out)]) == 0
    r = json.loads(out.read_text())
    assert (r["model"], r["parameters"], r["finished"]) == ("fire_groups_cifar", 965_856, True)
    assert (r["epochs_done"], r["epochs_planned"], r["final_epoch"]) == (2, 2, 2)
    assert r["train_seconds"] == pytest.approx(sum(e["seconds"] for e in epochs))
    assert r["eval_seconds"] == pytest.approx(sum(e["eval_seconds"] for e in epochs))
    assert r["hours"] == pytest.approx((r["train_seconds"] + r["eval_seconds"]) / 3600)
    assert r["epochs_with_cpu_seconds"] == 2 and r["cpu_seconds_recorded"] > 0
    assert r["test_curve"] == [[1, epochs[0]["test_top1"]], [2, epochs[1]["test_top1"]]]
    assert r["test_top1"] == epochs[1]["test_top1"]
    # the recipe's test-time parts score the final model
    assert r["test_protocol"] == {"precision": "fp32", "flip": True, "translate": 1}
    assert r["target_met"] is True and r["within_budget"] is True
    assert bench.summarise(run, target_top1=1.01)["target_met"] is False
    # an unfinished run is reported as such, never as meeting its target
    (run / "summary.json").unlink()
    unfinished = bench.summarise(run, target_top1=0.0)
    assert unfinished["finished"] is False and unfinished["target_met"] is False
    assert unfinished["parameters"] == 965_856  # from the model its checkpoint names
    with pytest.raises(SystemExit, match="not a run folder"):
        bench.summarise(tmp_path / "nowhere")


def test_a_distilled_run_is_charged_its_teachers_training(tmp_path, cifar_tree, monkeypatch):
    """The 8 hours are for everything the result needed: a student distilled from a teacher
    trained for it is accounted with the teacher's run."""
    common = ["--data", str(cifar_tree), "--epochs", "1", "--out-dir", str(tmp_path), *TINY]
    assert main(["train", "--model", "airbench_cifar", "--run-name", "teacher", *common]) == 0
    monkeypatch.chdir(tmp_path)  # the teacher named relative to where the student trains
    assert main(["train", str(RECIPE), "--run-name", "student", *common, "--distill",
                 "teacher=teacher/checkpoints/best.json,T=4"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # and found again from anywhere
    bench = load_benchmark("long_run")
    student = bench.summarise(tmp_path / "student", budget_hours=8)
    teacher = bench.summarise(tmp_path / "teacher")
    assert student["teacher"]["run_dir"] == str(tmp_path / "teacher")
    assert student["teacher"]["model"] == "airbench_cifar"
    assert student["teacher"]["distill"]["temperature"] == 4
    assert student["hours_with_teachers"] == pytest.approx(student["hours"] + teacher["hours"])
    assert teacher["hours_with_teachers"] == teacher["hours"] and "teacher" not in teacher
    assert student["within_budget"] is True
    assert bench.summarise(tmp_path / "student", budget_hours=student["hours"])[
        "within_budget"] is False  # the student alone fits; with its teacher it does not
    # a teacher outside any run folder: what it cost is unknown, so is the budget
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("best.json", "best.safetensors"):
        (bare / name).write_bytes((tmp_path / "teacher" / "checkpoints" / name).read_bytes())
    assert main(["train", str(RECIPE), "--run-name", "student2", *common, "--distill",
                 f"teacher={bare / 'best.json'}"]) == 0
    r = bench.summarise(tmp_path / "student2", budget_hours=8)
    assert r["teacher"]["hours_with_teachers"] is None and "not in a run folder" in \
        r["teacher"]["note"]
    assert r["hours_with_teachers"] is None and r["within_budget"] is None


def test_a_shorter_run_is_compared_with_a_baseline_at_the_same_point_of_its_schedule(
        tmp_path, capsys):
    # the student: 150 epochs planned, 60 done, scored every 20th; the baseline: 200 epochs,
    # scored every 20th at 0.5 + epoch / 1000
    student = fake_run(tmp_path / "student", epochs=150, logged=60, score_every=20,
                       top1=lambda e: 0.8 + e / 1000)
    baseline = fake_run(tmp_path / "baseline", epochs=200, logged=200, score_every=20,
                        top1=lambda e: 0.5 + e / 1000)
    (baseline / "summary.json").write_text("{}")  # finished
    bench = load_benchmark("long_run")
    out = tmp_path / "record.json"
    assert bench.main([str(student), "--against", str(baseline), "--output", str(out)]) == 0
    against = json.loads(out.read_text())["against"]
    assert (against["run_dir"], against["epochs_planned"], against["finished"]) == (
        str(baseline), 200, True)
    assert against["test_top1"] == pytest.approx(0.7)
    rows = against["rows"]
    assert [r["epoch"] for r in rows] == [20, 40, 60]
    assert [r["fraction"] for r in rows] == pytest.approx([20 / 150, 40 / 150, 0.4])
    # epoch 20 of 150 is epoch 26.7 of 200: between its scores at 20 and 40, interpolated
    assert [r["against_epoch"] for r in rows] == pytest.approx([80 / 3, 160 / 3, 80])
    assert [r["against_top1"] for r in rows] == pytest.approx([0.5 + 80 / 3000,
                                                              0.5 + 160 / 3000, 0.58])
    assert [r["difference"] for r in rows] == pytest.approx(
        [0.32 - 80 / 3000, 0.34 - 160 / 3000, 0.28])
    printed = capsys.readouterr().out
    # the student is unfinished (60 epochs of 900 s, 3 scorings of 90 s): its latest score is
    # not called final
    assert f"{student}: 60/150 epochs, 15.07 h of training and scoring, test top-1 so far " \
           "86.00% (unfinished: resume it with" in printed
    assert f"against {baseline} (200 epochs, final 70.00%) at the same fraction" in printed
    assert "    60     0.400   86.00       80.0      58.00      +28.00" in printed

    # a baseline scored only at epochs 30 and 60 of 200 (fractions 0.15 and 0.3): epoch 20 of
    # 150 (0.133) lies before its first score, 60 (0.4) past its last: no figure there, never
    # an extrapolated one
    early = fake_run(tmp_path / "early", epochs=200, logged=60, score_every=30,
                     top1=lambda e: 0.6)
    comparison = bench.compare_at_fractions(bench.summarise(student), bench.summarise(early))
    assert [r["against_top1"] for r in comparison["rows"]] == [None, pytest.approx(0.6), None]
    assert [r["difference"] is None for r in comparison["rows"]] == [True, False, True]
    table = bench.comparison_table(comparison).splitlines()
    assert "(200 epochs, so far 60.00%)" in table[0]
    assert table[2] == "    20     0.133   82.00       26.7          -           -"

    # a run whose config names no epoch count cannot be placed on its schedule
    (early / "config.yaml").write_text("lr: 0.1\n")
    with pytest.raises(SystemExit, match="config.yaml names no epoch count"):
        bench.compare_at_fractions(bench.summarise(student), bench.summarise(early))


def test_the_same_recipe_on_cifar100_stays_under_a_million_parameters(tmp_path, monkeypatch):
    archive = tmp_path / "cifar-100-python.tar.gz"
    write_cifar_archive(archive, "cifar100", per_class=1)
    monkeypatch.setitem(CIFAR_SPECS, "cifar100",
                        dataclasses.replace(CIFAR_SPECS["cifar100"], md5=file_md5(archive)))
    cfg = TrainConfig.from_yaml(RECIPE, {
        "data": "cifar100", "data_root": str(tmp_path), "epochs": 1, "warmup_epochs": 0.5,
        "batch_size": 50,
        "precision": "fp32", "channels_last": False, "out_dir": str(tmp_path),
        "run_name": "best100", "progress": False})
    result = train(cfg)
    # the classifier grows by 368 x 90 weights: 998,976 parameters at 100 classes
    assert sum(p.numel() for p in result.model.parameters()) == 998_976 < 1_000_000
    assert result.model.classifier.out_features == 100
    assert 0.0 <= result.final["test_top1"] <= 1.0
