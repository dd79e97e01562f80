"""The optimizer / activation study grids: exact expansion into valid TrainConfigs, grid
errors, the benchmark's dry run and a one-step run of a cell."""
import json
from pathlib import Path

import pytest
import yaml
from benchmark_scripts import load_benchmark

from squeezelab.train import ConfigError, TrainConfig
from squeezelab.workflows.study import expand_grid

ROOT = Path(__file__).resolve().parents[2]
OPT_GRID = ROOT / "recipes" / "studies" / "optimizer_grid.yaml"
ACT_GRID = ROOT / "recipes" / "studies" / "activation_grid.yaml"
STUDY = load_benchmark("optimizer_study")


def test_optimizer_grid_expands_to_the_studys_52_cells():
    cells = expand_grid(OPT_GRID)
    # 2 models x 2 batch sizes x (6 optimizers x 2 schedules + SGDR)
    assert len(cells) == 52 and len({c.name for c in cells}) == 52
    assert all(isinstance(c.config, TrainConfig) for c in cells)
    assert all(c.config.lr == 0.001 for c in cells)
    assert {c.config.batch_size for c in cells} == {64, 128}
    assert {c.config.model for c in cells} == {"squeezenet_cifar_e2", "squeezenet_cifar"}
    assert {c.config.optimizer for c in cells} == {"sgd", "momentum", "nesterov", "adam",
                                                   "rmsprop", "pgd"}
    sgdr = [c for c in cells if c.variants["optimizer"] == "sgdr"]
    assert len(sgdr) == 4 and all(c.variants["scheduler"] is None for c in sgdr)
    assert all((c.config.optimizer, c.config.schedule) == ("sgd", "cosine_restarts")
               for c in sgdr)
    first = cells[0]
    assert first.name == "vanilla-b64-sgd-constant" and first.config.run_name == first.name
    assert first.variants == {"model": "vanilla", "batch": "b64", "optimizer": "sgd",
                              "scheduler": "constant"}


def test_activation_grid_and_overrides():
    cells = expand_grid(ACT_GRID, {"epochs": 1, "limit_train": 500})
    assert [c.name for c in cells] == ["vanilla-relu", "vanilla-leaky_relu", "vanilla-tanh",
                                       "residual-relu", "residual-leaky_relu", "residual-tanh"]
    assert [c.config.model_args["activation"] for c in cells] == ["relu", "leaky_relu",
                                                                  "tanh"] * 2
    assert all(c.config.epochs == 1 and c.config.limit_train == 500 for c in cells)


@pytest.mark.parametrize("grid,match", [
    ({"axes": {"a": [{"name": "x", "lr": 0.1}], "b": [{"name": "y", "lr": 0.2}]}},
     "cell 'x-y' sets 'lr' on both axis 'a' and axis 'b'"),
    ({"axes": {"a": [{"name": "x", "skip_axes": ["c"]}]}}, "skips axis 'c'"),
    ({"axes": {"a": [{"lr": 0.1}]}}, "needs a name"),
    ({"axes": {"a": [{"name": "x", "optimiser": "sgd"}]}}, "unknown key 'optimiser'"),
    ({"axes": {"a": [{"name": "x", "optimizer": "lbfgs"}]}}, "optimizer must be one of"),
])
def test_grid_errors(grid, match):
    with pytest.raises(ConfigError, match=match):
        expand_grid(grid)


def test_dry_run_lists_every_cell(capsys):
    assert STUDY.main([str(OPT_GRID), "--dry-run", "--epochs", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "52 cells" and len(out) == 53
    assert out[0].startswith("vanilla-b64-sgd-constant")


def test_one_step_run_writes_accuracy_and_seconds(tmp_path, cifar_tree, capsys):
    grid = {"base": {"model": "squeezenet_cifar", "epochs": 1, "batch_size": 50, "lr": 0.001,
                     "precision": "fp32", "channels_last": False,
                     "model_args": {"fire_config": [[4, 8, 8]] * 8, "stem_channels": 8}},
            "axes": {"optimizer": [{"name": "adam", "optimizer": "adam"},
                                   {"name": "pgd", "optimizer": "pgd", "pgd_threshold": 1e9}],
                     "activation": [{"name": "tanh", "model_args": {"activation": "tanh"}}]}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))  # axis order matters
    out = tmp_path / "study.json"
    # 50 train images at batch 50: one optimizer step per cell
    assert STUDY.main([str(path), "--data", str(cifar_tree), "--limit-train", "50",
                       "--limit-test", "20", "--out-dir", str(tmp_path / "runs"),
                       "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [c["name"] for c in result["cells"]] == ["adam-tanh", "pgd-tanh"]
    for cell in result["cells"]:
        assert 0.0 <= cell["test_top1"] <= 1.0 and cell["seconds_per_epoch"] > 0
        assert cell["model_args"]["activation"] == "tanh"
    assert [c["pgd_perturbations"] for c in result["cells"]] == [0, 1]
    assert "environment" in result and result["overrides"]["limit_train"] == 50
    table = capsys.readouterr().out.splitlines()[-3:]  # two axes: optimizer columns
    assert table[0] == "| activation | adam | pgd |" and table[2].startswith("| tanh | ")


def study_cell(variants, top1, seconds):
    return {"variants": variants, "test_top1": top1, "seconds_per_epoch": seconds}


def test_table_puts_the_outer_axes_in_columns(tmp_path, capsys):
    # the optimizer grid's shape in miniature: model x batch x optimizer x scheduler,
    # with an SGDR-like cell that skips the scheduler axis
    cells = [study_cell({"model": m, "batch": b, "optimizer": o, "scheduler": s}, 0.5, 2.0)
             for m in ("vanilla", "residual") for b in ("b64", "b128")
             for o, s in (("adam", "constant"), ("adam", "cosine"), ("sgdr", None))]
    cells[0]["test_top1"], cells[0]["seconds_per_epoch"] = 0.6123, 12.34
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"cells": cells}))
    assert STUDY.main(["--table", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("| optimizer / scheduler | vanilla b64 | vanilla b128 | residual b64 | "
                        "residual b128 |")
    assert [line.split(" |")[0] for line in lines[2:]] == ["| adam constant", "| adam cosine",
                                                           "| sgdr"]
    assert lines[2].startswith("| adam constant | 61.23% (12.3 s) | 50.00% (2.0 s) |")


def test_table_of_a_file_that_is_not_a_study_is_refused(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"benchmark": "load_time"}))
    with pytest.raises(SystemExit, match=r"other.json is not a study result JSON"):
        STUDY.main(["--table", str(path)])
    with pytest.raises(SystemExit, match="give a grid file"):
        STUDY.main([])
