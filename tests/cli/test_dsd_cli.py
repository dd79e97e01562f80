"""The DSD command line: ``train --dsd``, a recipe's ``dsd:`` section, ``squeezelab dsd
CHECKPOINT``, and bad input failing before any training."""
import json
from pathlib import Path

import pytest
import yaml
from model_configs import TINY

from squeezelab.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def common(tmp_path, tree, name):
    return ["--data", str(tree), "--limit-train", "100", "--limit-test", "20",
            "--batch-size", "50", "--lr", "0.01", "--precision", "fp32",
            "--channels-last", "false", "--progress", "false", "--out-dir", str(tmp_path),
            "--run-name", name, "--model", "squeezenet_cifar",
            *[f"--model-arg={k}={v}" for k, v in TINY.items()]]


def phases(run_dir):
    return [json.loads(x)["phase"] for x in (run_dir / "metrics.jsonl").read_text().split("\n")
            if x]


def test_train_dsd_flag_then_dsd_from_checkpoint(tmp_path, cifar_tree, capsys):
    assert main(["train", "--dsd", "sparsity=0.4,epochs=1-1-1",
                 *common(tmp_path, cifar_tree, "flag")]) == 0
    assert phases(tmp_path / "flag") == ["dense", "sparse", "redense"]
    assert (tmp_path / "flag" / "dsd_weights.png").is_file()
    capsys.readouterr()
    # squeezelab dsd: from the trained model (its run directory), dense phase skipped
    assert main(["dsd", str(tmp_path / "flag"), "--sparsity", "0.3", "--epochs", "1-1",
                 "--run-name", "from_ckpt", "--lr", "0.02", "--layers", "expand3x3",
                 "--layers", "squeeze", "--exclude", "features.4.*"]) == 0
    run = tmp_path / "from_ckpt"
    assert phases(run) == ["sparse", "redense"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().split("\n") if x]
    assert lines[0]["sparsity"] == pytest.approx(0.3, abs=0.003)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["epochs"] == 2 and saved["lr"] == 0.02 and saved["limit_train"] == 100
    dsd = json.loads((run / "checkpoints" / "last.json").read_text())["hooks"]["dsd"]["config"]
    assert dsd["layers"] == ["expand3x3", "squeeze"] and dsd["exclude"] == ["features.4.*"]
    out = capsys.readouterr().out
    assert "(fp32, no flip) after DSD" in out.split("final test top-1")[1]  # how it was scored
    # the model written, scored before (the dense checkpoint) and after, the same way
    assert "before: top-1 " in out and "(fp32, no flip, 20 test images)" in out
    after = float(out.split("after:  top-1 ")[1].split()[0])
    assert after == pytest.approx(lines[-1]["test_top1"])  # last epoch: the model returned


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("dsd_*.yaml")))
def test_recipe_dsd_section_is_read(recipe):
    from squeezelab.cli.method_commands import dsd_config_for
    from squeezelab.train import TrainConfig
    from squeezelab.workflows.dsd import DSDConfig

    args = type("A", (), {"dsd": None, "recipe": str(RECIPES / recipe)})()
    # the seed study's defaults: 40% sparsity, 5-3-5 epochs
    assert dsd_config_for(args) == DSDConfig(sparsity=0.4, dense_epochs=5, sparse_epochs=3,
                                             redense_epochs=5)
    assert TrainConfig.from_yaml(RECIPES / recipe).epochs == 13
    args.dsd = "sparsity=0.5,epochs=2-1-1"  # the flag wins over the recipe
    assert dsd_config_for(args).sparsity == 0.5


@pytest.mark.parametrize("argv,message", [
    (["train", "--dsd", "sparsity=1.2,epochs=5-3-5"], "DSD sparsity must be in [0, 1), got 1.2"),
    (["train", "--dsd", "epochs=5-x-5"], "DSD epochs must be"),
    (["train", "--dsd", "epochs=1-1-1", "--epochs", "7"], "--epochs 7 conflicts with the DSD"),
    (["dsd", "CKPT", "--epochs", "5-3-5"], "--epochs takes SPARSE-REDENSE, got '5-3-5'"),
    (["dsd", "CKPT", "--sparsity", "1.2"], "DSD sparsity must be in [0, 1), got 1.2"),
])
def test_bad_input_fails_before_training(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / "missing") if a == "CKPT" else a for a in argv]
    argv += ["--data", str(tmp_path / "no-data"), "--out-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not any(tmp_path.iterdir())  # nothing was written: no data loaded, no run started
