"""benchmarks/compact_latency.py: it times the compact study's own variants (read from the
recipe, so the two cannot drift apart) and writes their counts and medians."""
import json

import pytest
from benchmark_scripts import load_benchmark


def test_compact_latency_times_the_study_variants(tmp_path):
    bench = load_benchmark("compact_latency")
    names = [v["name"] for v in bench.study_variants()]
    assert names == ["sq_standard", "sq_factorized", "sq_flattened", "sq_separable",
                     "googlenet", "mobilenet_v2", "resnet_bottleneck"]
    out = tmp_path / "latency.json"
    result = bench.main(["--variants", "sq_standard", "sq_separable", "--repeats", "2",
                         "--batch-repeats", "1", "--rounds", "2", "--threads", "1",
                         "-o", str(out)])
    assert json.loads(out.read_text())["benchmark"] == "compact_latency"
    standard, separable = result["variants"]
    assert (standard["model"], standard["model_args"]) == ("squeezenet_cifar",
                                                           {"expand3x3": "standard"})
    assert standard["parameters"] == 730_570 and separable["parameters"] == 241_930
    assert separable["macs"] < standard["macs"]
    for row in result["variants"]:
        assert row["batch1_median_ms"] > 0 and row["batch64_images_per_s"] > 0
        # timed in turn, twice round: the figure is the median of the two rounds' medians
        assert len(row["batch1_round_medians_ms"]) == len(row["batch64_round_medians_ms"]) == 2
        assert row["batch1_median_ms"] == pytest.approx(
            sum(row["batch1_round_medians_ms"]) / 2)
    assert result["threads"] == 1 and len(result["load_average_before"]) == 3


def test_unknown_variant_is_refused():
    bench = load_benchmark("compact_latency")
    with pytest.raises(SystemExit):
        bench.main(["--variants", "squeezenet_v3"])
