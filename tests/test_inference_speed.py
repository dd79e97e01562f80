"""benchmarks/inference_speed.py on one small model: the JSON it writes, and the pruning
rows' counts (magnitude pruning leaves the dense shapes; removing channels shrinks them)."""
import json

from benchmark_scripts import load_benchmark


def test_inference_speed_writes_rows_for_models_and_pruned_variants(tmp_path):
    bench = load_benchmark("inference_speed")
    out = tmp_path / "speed.json"
    result = bench.main(["--models", "squeezenet_cifar", "--repeats", "2", "--batch", "4",
                         "-o", str(out)])
    assert json.loads(out.read_text())["benchmark"] == "inference_speed"
    (dense,) = result["models"]
    assert dense["parameters"] == 730_570 and dense["input"] == 32
    assert dense["batch1_median_ms"] > 0 and dense["batch4_images_per_s"] > 0
    magnitude, quarter, half = result["pruned"]
    assert "magnitude-pruned 70%" in magnitude["model"]
    # zeros inside dense tensors: the same parameter count and MACs as the dense model
    assert (magnitude["parameters"], magnitude["macs"]) == (dense["parameters"], dense["macs"])
    assert dense["macs"] > quarter["macs"] > half["macs"]
    assert dense["parameters"] > quarter["parameters"] > half["parameters"]


def test_layout_and_precision_are_applied_and_recorded(tmp_path):
    bench = load_benchmark("inference_speed")
    result = bench.main(["--models", "squeezenet_cifar", "--repeats", "1", "--batch", "2",
                         "--no-pruned", "--channels-last", "--precision", "bf16",
                         "-o", str(tmp_path / "speed.json")])
    assert (result["precision"], result["channels_last"], result["pruned"]) == ("bf16", True, [])
    assert result["models"][0]["batch2_images_per_s"] > 0
