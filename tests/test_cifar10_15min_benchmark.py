"""The 15-minute benchmark and its ablation table, run on a tiny slice of the shared JPEGs: the
full recipe timed, one part trained again without it, one test-time part scored again."""
import json

import pytest
from benchmark_scripts import load_benchmark

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
