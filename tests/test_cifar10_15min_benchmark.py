"""The 15-minute benchmark and its ablation table, run on a tiny slice of the shared JPEGs: the
full recipe timed, one part trained again without it, one test-time part scored again; and the
recipe's version for CPUs without native bf16."""
import json

import pytest
import yaml
from benchmark_scripts import load_benchmark

from squeezelab.metrics import count_macs
from squeezelab.models import create_model
from squeezelab.train import TrainConfig

ROOT_RECIPE = "recipes/cifar10_15min.yaml"


def test_the_ablation_table_removes_one_part_per_row(tmp_path, cifar_tree):
    bench = load_benchmark("cifar10_15min")
    out = tmp_path / "result.json"
    tiny = ["--data", str(cifar_tree), "--limit-train", "100", "--limit-test", "40",
            "--epochs", "2", "--warmup-epochs", "0.5", "--eval-every", "2", "--batch-size", "50",
            "--precision", "fp32",
            "--channels-last", "false", "--progress", "false"]
    assert bench.main(["--recipe", str(bench.ROOT / ROOT_RECIPE), "--out-dir", str(tmp_path),
                       "--run-name", "full", "--keep-cache", "--output", str(out),
                       "--ablate", "lookahead,test_time_translate", "--", *tiny]) == 0
    r = json.loads(out.read_text())
    assert r["recipe"] == ROOT_RECIPE and r["epochs"] == 2 and 0 <= r["test_top1"] <= 1
    assert r["test_protocol"] == {"precision": "fp32", "flip": True, "translate": 1}
    assert r["parameters"] == 828_600 and r["wall_seconds"] > r["train_seconds"] > 0
    retrained, rescored = r["ablations"]
    assert retrained["removed"] == "lookahead"
    assert retrained["flags"][:2] == ["--lookahead-steps", "0"]
    assert retrained["run_dir"].endswith("full-no-lookahead")
    assert rescored == {"removed": "test_time_translate", "retrained": False,
                        "flags": ["--test-time-translate", "0"],
                        "test_top1": rescored["test_top1"], "test_top5": rescored["test_top5"],
                        "test_protocol": {"precision": "fp32", "flip": True},
                        "top1_change_points": rescored["top1_change_points"]}
    assert rescored["top1_change_points"] == pytest.approx(
        100 * (rescored["test_top1"] - r["test_top1"]))
    # run again: the finished runs are reused with the timing they recorded, not trained again
    again = tmp_path / "again.json"
    assert bench.main(["--recipe", str(bench.ROOT / ROOT_RECIPE), "--out-dir", str(tmp_path),
                       "--run-name", "full", "--keep-cache", "--output", str(again),
                       "--ablate", "lookahead", "--", *tiny]) == 0
    r2 = json.loads(again.read_text())
    assert r2["wall_seconds"] == r["wall_seconds"]
    assert r2["ablations"][0]["wall_seconds"] == retrained["wall_seconds"]
    assert r2["resumed"] is False
    # a run the machine stopped before its summary: resumed, not started again
    cut = tmp_path / "full-no-lookahead"
    (cut / "summary.json").unlink()
    (cut / bench.TIMING_FILE).unlink()
    assert bench.main(["--recipe", str(bench.ROOT / ROOT_RECIPE), "--out-dir", str(tmp_path),
                       "--run-name", "full", "--keep-cache", "--output", str(again),
                       "--ablate", "lookahead", "--", *tiny]) == 0
    row = json.loads(again.read_text())["ablations"][0]
    assert row["resumed"] is True and row["run_dir"] == str(cut) and row["epochs"] == 2
    # "all": the parts the recipe switches on (no progressive sizes in it)
    assert bench._parts("all", str(bench.ROOT / ROOT_RECIPE)) == [
        "stem_init", "freeze_stem", "identity_init", "norm_lr_scale", "freeze_bn_scale",
        "bn_momentum", "crop_padding", "lookahead", "ema",
        "test_time_translate", "test_time_flip"]
    # a part switched on inside model_args counts only when it is on
    off = tmp_path / "off.yaml"
    off.write_text("model: airbench_cifar\nmodel_args: {identity_init: false}\ncrop_padding: 4\n")
    assert bench._parts("all", str(off)) == []
    off.write_text("model: airbench_cifar\nlabel_smoothing: 0.2\n")  # on only where set above 0
    assert bench._parts("all", str(off)) == ["label_smoothing"]
    with pytest.raises(SystemExit, match="unknown part.*whitening"):
        bench.main(["--recipe", str(bench.ROOT / ROOT_RECIPE), "--ablate", "whitening"])


def test_the_fp32_recipe_is_the_main_one_on_a_network_a_third_its_cost():
    """recipes/cifar10_15min_fp32.yaml (for CPUs without native bf16) changes only what its
    header lists, and its network costs a third of the main recipe's per image."""
    bench = load_benchmark("cifar10_15min")
    main_recipe = yaml.safe_load((bench.ROOT / ROOT_RECIPE).read_text())
    fp32 = yaml.safe_load((bench.ROOT / "recipes" / "cifar10_15min_fp32.yaml").read_text())
    changed = {k for k in main_recipe.keys() | fp32.keys() if main_recipe.get(k) != fp32.get(k)}
    assert changed == {"model_args", "batch_size", "lr", "epochs", "warmup_epochs",
                       "progressive_sizes", "time_budget", "eval_every", "run_name"}
    assert fp32["model_args"] == {**main_recipe["model_args"], "widths": [32, 64, 128]}
    # the same rate per image, the same share of warm-up, scored once at the end
    assert fp32["lr"] / fp32["batch_size"] == main_recipe["lr"] / main_recipe["batch_size"]
    assert fp32["warmup_epochs"] / fp32["epochs"] == pytest.approx(
        main_recipe["warmup_epochs"] / main_recipe["epochs"], abs=0.005)
    assert fp32["eval_every"] == fp32["epochs"] and fp32["time_budget"] < 900
    # the last third of the epochs at the images' own size, the size the test set is scored at
    assert fp32["progressive_sizes"][-1] == 32
    TrainConfig(**fp32)  # a valid config
    small, full = (create_model("airbench_cifar", **r["model_args"]) for r in (fp32, main_recipe))
    assert sum(p.numel() for p in small.parameters()) == 295_096
    assert count_macs(small, 32) * 2.9 < count_macs(full, 32)
