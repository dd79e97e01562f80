"""benchmarks/gpu_time_to_target.sh, the GPU part of issue 20 as one command for a lent machine:
schedules run shortest first until one reaches the target, each timed by the 15-minute
benchmark, summed up in one JSON; a deadline already spent runs nothing. Checked here on the
CPU with the recipe made tiny (TRAIN_FLAGS) on the shared JPEGs' test slice."""
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_time_to_target.sh"


def _run(tmp_path, cifar_tree, **env):
    tiny = (f"--data {cifar_tree} --limit-train 100 --limit-test 40 --batch-size 50 "
            "--precision fp32 --channels-last false --compile false --progress false")
    full = {**os.environ, "OUT": str(tmp_path / "out"), "WORK_DIR": str(tmp_path / "work"),
            "PYTHON": sys.executable, "CIFAR10_JPEG": str(cifar_tree.parent / "none"),
            "SQUEEZELAB_CIFAR10_DIR": str(cifar_tree), "TRAIN_FLAGS": tiny, **env}
    return subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def test_schedules_run_shortest_first_until_one_reaches_the_target(tmp_path, cifar_tree):
    done = _run(tmp_path, cifar_tree, EPOCHS="1 2", TARGET="1.5", DEADLINE_S="500")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "out" / "time_to_target.json").read_text())
    assert [r["epochs"] for r in summary["runs"]] == [1, 2]  # 150%: never reached
    assert summary["time_to_target_seconds"] is None and not any(r["met"] for r in summary["runs"])
    assert summary["best_top1"] == max(r["test_top1"] for r in summary["runs"])
    assert summary["unfinished"] == []
    assert all(r["parameters"] == 828_600 and r["wall_seconds"] > r["train_seconds"] > 0
               for r in summary["runs"])
    assert "python" in summary["machine"] and "not reached" in done.stdout
    # a target the first schedule reaches: it alone runs, and its training time is the answer
    met = _run(tmp_path / "again", cifar_tree, EPOCHS="1 2", TARGET="0", DEADLINE_S="500")
    assert met.returncode == 0, met.stdout + met.stderr
    summary = json.loads((tmp_path / "again" / "out" / "time_to_target.json").read_text())
    (run,) = summary["runs"]
    assert run["met"] and summary["reached_with_epochs"] == 1
    assert summary["time_to_target_seconds"] == run["train_seconds"]


def test_a_schedule_that_ends_without_its_result_is_listed_as_unfinished(tmp_path, cifar_tree):
    # a flag the trainer refuses: the run ends before its first epoch, with exit status 2
    done = _run(tmp_path, cifar_tree, EPOCHS="1 2", TARGET="0", DEADLINE_S="500",
                TRAIN_FLAGS="--no-such-flag")
    assert done.returncode != 0
    summary = json.loads((tmp_path / "out" / "time_to_target.json").read_text())
    assert summary["runs"] == [] and summary["time_to_target_seconds"] is None
    (cut,) = summary["unfinished"]  # the 2-epoch schedule never started
    assert cut["epochs"] == 1 and cut["ended"] == "failed" and cut["exit_status"] != 0
    assert cut["epochs_trained"] == 0 and cut["epoch_seconds"] == []


def test_a_deadline_already_spent_runs_nothing(tmp_path, cifar_tree):
    done = _run(tmp_path, cifar_tree, DEADLINE_S="0")
    assert done.returncode == 3 and "not run" in done.stderr
    summary = json.loads((tmp_path / "out" / "time_to_target.json").read_text())
    assert summary["runs"] == [] and summary["best_top1"] is None
    assert summary["unfinished"] == []


def test_the_gpu_recipe_compiles_and_stays_under_a_million_parameters():
    from squeezelab.models import create_model

    recipe = yaml.safe_load((ROOT / "recipes" / "cifar10_gpu.yaml").read_text())
    assert recipe["compile"] is True
    model = create_model(recipe["model"], num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 828_600 < 1_000_000
