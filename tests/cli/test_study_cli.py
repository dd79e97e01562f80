"""``squeezelab study``: a run, ``--list`` whose commands (run one by one, then ``--merge``) give
the results JSON one run gives, ``--set`` and ``--seeds`` carried into those commands, and bad
input as one ``error:`` line naming the file and the key."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from model_configs import TINY

from squeezelab.cli import main

ROOT = Path(__file__).resolve().parents[2]

#: what differs between two runs of the same cells: timings, paths, time stamps
VOLATILE = ("seconds", "run_seconds", "train_seconds", "seconds_per_epoch", "images_per_s",
            "cpu_seconds", "train_cpu_seconds", "finished_at", "run_dir", "metrics_path",
            "file", "machine", "git_dirty")


def write_recipe(path, data, axes=None):
    recipe = {
        "study": "cli_tiny",
        "base": {"data": str(data), "model": "squeezenet_cifar", "model_args": dict(TINY),
                 "epochs": 1, "batch_size": 50, "optimizer": "adamw", "lr": 0.003,
                 "limit_train": 100, "limit_test": 50, "precision": "fp32",
                 "channels_last": False, "progress": False},
        "axes": axes or {"act": [{"name": "relu", "model_args": {"activation": "relu"}},
                                 {"name": "tanh", "model_args": {"activation": "tanh"}}]},
        "budgets": {"smoke": {}, "cpu": {"epochs": 2}, "full": {"epochs": 3}},
    }
    if axes is None:
        recipe["published"] = {"values": [{"where": {"act": "tanh"}, "percent": 42.0}]}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def comparable(results):
    """The merged results without what two runs of the same cells may differ in."""
    cells = []
    for cell in results["cells"]:
        cell = {k: v for k, v in cell.items() if k not in VOLATILE}
        cell["config"] = {k: v for k, v in cell["config"].items() if k != "out_dir"}
        cell["curves"] = [{k: v for k, v in r.items() if k not in VOLATILE}
                          for r in cell["curves"]]
        cells.append(cell)
    groups = [{k: v for k, v in g.items() if k != "seconds"} for g in results["groups"]]
    return cells, groups, results["counts"], results["seeds"], results["overrides"]


def test_list_commands_then_merge_equal_one_run(tmp_path, cifar_tree, capsys):
    recipe = write_recipe(tmp_path / "tiny.yaml", cifar_tree)
    spread = tmp_path / "spread"
    argv = ["study", str(recipe), "--budget", "smoke", "--out", str(spread), "--seeds", "0",
            "1", "--set", "weight_decay=0.01"]
    assert main([*argv, "--list"]) == 0
    captured = capsys.readouterr()
    commands = captured.out.splitlines()
    assert len(commands) == 4  # 2 activations x 2 seeds
    merge = captured.err.split("when they are done: ")[1].strip()
    for k, command in enumerate(commands, 1):
        words = shlex.split(command)
        assert words[0] == "squeezelab" and words[-2:] == ["--cell", str(k)]
        assert "--seeds" in words and "weight_decay=0.01" in words
    for command in reversed(commands):  # any order: each cell is its own run
        assert main(shlex.split(command)[1:]) == 0
    assert main(shlex.split(merge)[1:]) == 0
    out = capsys.readouterr().out
    assert "cli_tiny (smoke): 4 done, 0 skipped, 0 failed, 0 pending of 4 cells" in out
    assert f"results: {spread / 'results.json'}" in out
    one = tmp_path / "one"
    assert main(["study", str(recipe), "--budget", "smoke", "--out", str(one), "--seeds", "0",
                 "1", "--set", "weight_decay=0.01"]) == 0
    out = capsys.readouterr().out
    assert "cell 1/4 relu-s0: running (train)" in out and "cell 4/4 tanh-s1: done: " in out
    spread_results = json.loads((spread / "results.json").read_text())
    one_results = json.loads((one / "results.json").read_text())
    assert comparable(spread_results) == comparable(one_results)
    assert [c["config"]["weight_decay"] for c in one_results["cells"]] == [0.01] * 4
    assert one_results["overrides"] == {"weight_decay": 0.01}
    tanh = one_results["cells"][1]
    assert tanh["published"][0]["percent"] == 42.0


def test_results_path_and_a_second_run_that_skips_everything(tmp_path, cifar_tree, capsys):
    recipe = write_recipe(tmp_path / "tiny.yaml", cifar_tree,
                          axes={"act": [{"name": "relu", "model_args": {"activation": "relu"}}]})
    results = tmp_path / "recorded" / "study.json"
    argv = ["study", str(recipe), "--budget", "smoke", "--out", str(tmp_path / "out"),
            "--results", str(results)]
    assert main(argv) == 0
    first = json.loads(results.read_text())
    assert first["counts"]["done"] == 1 and not (tmp_path / "out" / "results.json").exists()
    capsys.readouterr()
    assert main([*argv, "--list"]) == 0
    assert f"--results {results}" in capsys.readouterr().out
    assert main(argv) == 0
    assert "cell 1/1 relu-s0: done in an earlier run, skipped" in capsys.readouterr().out
    assert json.loads(results.read_text())["cells"] == first["cells"]


@pytest.mark.parametrize("args,message", [
    (["--cell", "7"], "--cell 7: {recipe} has cells 1..2 under budget smoke"),
    (["--set", "lrr=0.1"], "{recipe} cell 'relu-s0': unknown key 'lrr'"),
    (["--set", "seed=3"], "'seed' is set by the study from seeds:"),
    (["--seeds", "1", "1"], "--seeds lists a seed twice"),
    (["--out-root", "elsewhere"], "--out names one study's folder, --out-root the folder of "
     "each study's: give one of them"),
])
def test_bad_arguments_exit_2_with_one_error_line(tmp_path, cifar_tree, capsys, args, message):
    recipe = write_recipe(tmp_path / "tiny.yaml", cifar_tree)
    assert main(["study", str(recipe), "--budget", "smoke", "--out", str(tmp_path / "o"),
                 *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message.format(recipe=recipe) in err


def test_several_recipes_under_one_root_and_a_worker_of_their_pool(tmp_path, cifar_tree,
                                                                  capsys):
    from squeezelab.workflows.studies import StudyError, plan_study
    from squeezelab.workflows.studies.runner import studies_argv

    a = write_recipe(tmp_path / "a.yaml", cifar_tree)
    b = tmp_path / "b.yaml"
    b.write_text(a.read_text().replace("study: cli_tiny", "study: cli_other"))
    root = tmp_path / "root"
    # one worker of a --jobs pool (run here, in this process): both studies, each line
    # naming its study, each study's results in <root>/<study>/<budget>
    argv = ["study", str(a), str(b), "--budget", "smoke", "--out-root", str(root),
            "--set", "epochs=1"]
    assert main([*argv, "--worker"]) == 0
    out = capsys.readouterr().out
    assert "cli_tiny: cell 1/2 relu-s0: running (train)" in out
    assert "cli_other: cell 2/2 tanh-s0: done:" in out
    for study in ("cli_tiny", "cli_other"):
        results = json.loads((root / study / "smoke" / "results.json").read_text())
        assert results["counts"]["done"] == 2 and results["overrides"] == {"epochs": 1}
    # the command line a pool's workers get says the same
    plans = [plan_study(path, "smoke", out_root=root, overrides={"epochs": 1})
             for path in (a, b)]
    assert studies_argv(plans) == ["squeezelab", *argv]
    assert studies_argv(plans[:1])[:5] == ["squeezelab", "study", str(a), "--budget", "smoke"]
    with pytest.raises(StudyError, match="is not planned as .* one command cannot run both"):
        studies_argv([plans[0], plan_study(b, "smoke", out=tmp_path / "other")])
    # a second run of both, one after the other, skips every cell
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("done in an earlier run, skipped") == 4
    assert "2 studies:" in out
    # what belongs to one study is refused with several
    assert main([*argv, "--cell", "1"]) == 2
    assert "--cell belong(s) to one study: give a single recipe with it, not 2" in \
        capsys.readouterr().err


def test_a_bad_recipe_is_named_with_its_key(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("study: bad\nbudgets: {smoke: {}, cpu: {}, full: {}}\naxes:\n"
                    "  act: [{name: a, activaton: relu}]\n")
    assert main(["study", str(path), "--budget", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} cell 'a-s0': unknown key 'activaton'")
    assert main(["study", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_list_of_a_shipped_recipe_numbers_every_cell(capsys):
    recipe = ROOT / "recipes" / "studies" / "optimizer_grid.yaml"
    assert main(["study", str(recipe), "--budget", "cpu", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 52
    assert lines[0] == (f"squeezelab study {recipe} --budget cpu "
                        "--out runs/studies/optimizer_grid/cpu --cell 1")
