"""The benchmark scripts of architecture learning, layer pruning, multi-crop testing and the
binarisation regulariser, run at a tiny size: each writes its JSON with the figures it claims."""
import json

import pytest
import torch
from benchmark_scripts import load_benchmark

from squeezelab.compress.format.layout import VERSION
from squeezelab.train import TrainConfig, train

# 12 stem channels feed a 16-wide first Fire (no bypass there): the stem is gated too
TINY = {"fire_config": [[4, 8, 8], [4, 8, 8], [8, 16, 16], [8, 16, 16],
                        [8, 16, 16], [8, 16, 16], [8, 24, 24], [8, 24, 24]],
        "stem_channels": 12}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, cifar_tree):
    out = tmp_path_factory.mktemp("bench")
    cfg = TrainConfig(model="squeezenet_cifar", model_args=TINY, data=str(cifar_tree), epochs=1,
                      batch_size=50, limit_train=100, limit_test=40, precision="fp32",
                      channels_last=False, progress=False, out_dir=str(out), run_name="base")
    return str(train(cfg).run_dir)


def test_architecture_learning_benchmark(ckpt, tmp_path):
    bench = load_benchmark("architecture_learning")
    out = tmp_path / "arch.json"
    assert bench.main(["--checkpoint", ckpt, "--learn-epochs", "1", "--finetune-epochs", "1",
                       "--width-count", "1", "--gate-lr", "0.6", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["parameters_removed"] == pytest.approx(
        1 - r["after"]["parameters"] / r["before"]["parameters"])
    assert r["top1_lost"] == pytest.approx(r["before"]["top1"] - r["after"]["top1"])
    assert r["target"]["met"] == (r["parameters_removed"] >= 0.3 and r["top1_lost"] <= 0.01)
    assert r["widths"][0] == {"layer": "features.0", "original_width": 12,
                              "learned_width": r["widths"][0]["learned_width"], "linear": False}
    assert r["extra_epochs"] == 2 and r["train_images"] == 100
    assert "command" in r["environment"]


def test_layer_pruning_benchmark(ckpt, tmp_path):
    bench = load_benchmark("layer_pruning")
    out = tmp_path / "layers.json"
    assert bench.main(["--checkpoint", ckpt, "--num-fires", "1", "--selection-images", "40",
                       "--retrain-epochs", "1", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert len(r["removed"]) == 1 and r["parameters_removed"] > 0
    drops = {n: c["drop"] for n, c in r["steps"][0]["candidates"].items()}
    assert drops[r["removed"][0]] == min(drops.values())


def test_multi_crop_benchmark(ckpt, tmp_path):
    bench = load_benchmark("multi_crop")
    out = tmp_path / "crops.json"
    assert bench.main(["--checkpoint", ckpt, "--limit-test", "20", "--crops", "10",
                       "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["results"]) == {"single", "flip", "10-crop"}
    ten = r["results"]["10-crop"]
    assert ten["label"] == "fp32, 10-crop (32 px, images padded by 4 px)"
    assert ten["minus_single"]["difference"] == pytest.approx(
        ten["top1"] - r["results"]["single"]["top1"])


def test_binarize_regularizer_benchmark(cifar_tree, tmp_path):
    bench = load_benchmark("binarize_regularizer")
    out = tmp_path / "bin.json"
    torch.manual_seed(0)
    assert bench.main(["--data", str(cifar_tree), "--epochs", "1", "--limit-train", "100",
                       "--limit-test", "40", "--batch-size", "50", "--weights", "1e-3",
                       "--model-args", json.dumps(TINY), "--out-dir", str(tmp_path / "runs"),
                       "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["runs"]) == {"plain", "binarize_weight=0.001"}
    row = r["runs"]["binarize_weight=0.001"][0]
    assert row["binarize_weight"] == 0.001
    assert set(row["binarized"]) == {"xnor", "binaryconnect"}
    assert r["summary"]["plain"]["float_top1"]["mean"] == r["runs"]["plain"][0]["float_top1"]


FAKE_NNCODEC = '''
"""A stand-in for NNCodec's nncodec.nn: a lossless npz "codec", to test the plumbing."""
import io

import numpy as np
import pandas  # noqa: F401  (NNCodec's import pulls in dataset packages; the worker stubs them)


def encode(params, args=None):
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    return buffer.getvalue()


def decode(bitstream, args=None):
    return dict(np.load(io.BytesIO(bitstream)))
'''


def test_nncodec_comparison_benchmark_runs_both_coders_on_the_same_weights(
        ckpt, cifar_tree, tmp_path, monkeypatch):
    """The comparison with a lossless stand-in for NNCodec: its decoded model must score
    exactly what the .sqz scores, and the rows say which coder made which bytes."""
    import sys

    from squeezelab.compress.format.sqz import read_sqz
    from squeezelab.workflows.deep_compression import CompressConfig, compress

    sqz = tmp_path / "m.sqz"
    compress(ckpt, CompressConfig.from_dict({
        "prune": {"sparsity": 0.5}, "retrain_epochs": 0, "centroid_epochs": 0,
        "sharing": {"bits": 4}, "train": {"data": str(cifar_tree), "limit_test": 40,
                                          "precision": "fp32", "progress": False}}),
        sqz, log=lambda m: None)
    fake = tmp_path / "fake" / "nncodec"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "nn.py").write_text(FAKE_NNCODEC)
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    out = tmp_path / "cmp.json"
    bench = load_benchmark("nncodec_compare")
    monkeypatch.setattr(sys, "argv", [
        "nncodec_compare.py", str(sqz), "--nncodec-python", sys.executable, "--qps", "-30",
        "--methods", "uniform", "--data", str(cifar_tree), "--limit-test", "40", "-o", str(out)])
    bench.main()
    result = json.loads(out.read_text())
    rows = {(r["coder"], r["setting"]): r for r in result["rows"]}
    ours = rows[("squeezelab", "m.sqz as given")]
    assert ours["bytes"] == sqz.stat().st_size
    v = f"v{VERSION}"
    # the coders are lossless, and "smallest" is never larger than "auto"
    for coder in ("auto", "smallest"):
        assert rows[("squeezelab", f"{v} {coder} coder")]["top1"] == ours["top1"]
    assert (rows[("squeezelab", f"{v} smallest coder")]["bytes"]
            <= rows[("squeezelab", f"{v} auto coder")]["bytes"])
    assert (rows[("squeezelab", f"{v} auto coder + float16 + 8-bit dense")]["bytes"]
            < ours["bytes"])
    fake_row = rows[("nncodec", "uniform_qp-30")]
    assert fake_row["top1"] == ours["top1"]  # the same weights, decoded losslessly
    state = read_sqz(sqz).state_dict()
    assert fake_row["bytes"] > sum(v.numel() * 4 for v in state.values()
                                   if v.is_floating_point())  # an uncompressed npz
    assert "pandas" in result["nncodec_stand_ins"] or "pandas" in sys.modules
    assert result["test_images"] == 40


def test_sqz_entropy_benchmark_bounds_the_coded_streams(tmp_path, monkeypatch):
    """The entropy report of a file: its static bounds sit at or below what the rANS streams
    spend, and a context the tables outweigh is reported as costing more, not hidden."""
    import sys

    from squeezelab.compress.format.sqz import save_compressed
    from squeezelab.compress.pruning.magnitude import PruneConfig, prune_
    from squeezelab.compress.quantization.weight_sharing import (
        WeightSharingConfig,
        share_weights_,
        shared_modules,
    )
    from squeezelab.models import create_model

    torch.manual_seed(0)
    model = create_model("squeezenet_cifar")
    prune_(model, PruneConfig(sparsity=0.7))
    share_weights_(model, WeightSharingConfig(bits=4, max_iter=5))
    path = save_compressed(model, tmp_path / "m.sqz", coder="ans")
    out = tmp_path / "e.json"
    monkeypatch.setattr(sys, "argv", ["sqz_entropy.py", str(path), "-o", str(out)])
    load_benchmark("sqz_entropy").main()
    result = json.loads(out.read_text())
    totals, now = result["totals_bytes"], result["streams_now_bytes"]
    assert totals["kept"] == sum(int(m.weight_mask.sum()) for m in shared_modules(model).values())
    # rANS reaches the static entropy within its table's quarter-bit rounding and flushes
    assert totals["index_static"] <= now["index"] <= 1.02 * totals["index_static"] + 200
    assert totals["positions_static"] > 0 and totals["index_given_previous_index"] > 0


def test_int8_speed_benchmark_times_every_way_of_running_the_model(ckpt, cifar_tree, tmp_path,
                                                                    monkeypatch):
    """The int8 benchmark on a tiny compressed model with an int8 calibration: a row for each
    runtime, the file's int8 row built from the file alone, every top-1 a real score."""
    import sys

    from squeezelab.workflows.deep_compression import CompressConfig, compress

    sqz = tmp_path / "m.sqz"
    compress(ckpt, CompressConfig.from_dict({
        "prune": {"sparsity": 0.5}, "retrain_epochs": 0, "centroid_epochs": 0,
        "sharing": {"bits": 4}, "int8_calibration": 32,
        "train": {"data": str(cifar_tree), "limit_test": 40, "precision": "fp32",
                  "progress": False}}), sqz, log=lambda m: None)
    out = tmp_path / "int8.json"
    monkeypatch.setattr(sys, "argv", ["int8_speed.py", str(sqz), ckpt, "--limit-test", "40",
                                      "--calibration", "32", "--threads", "1", "--rounds", "3",
                                      "-o", str(out)])
    load_benchmark("int8_speed").main()
    result = json.loads(out.read_text())
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == ["dense, PyTorch eager fp32", "dense, ONNX Runtime fp32",
                          "dense, ONNX Runtime static int8 (QDQ)", "m.sqz, PyTorch eager fp32",
                          "m.sqz, int8 from the file"]
    assert rows["dense, ONNX Runtime fp32"]["top1"] == rows["dense, PyTorch eager fp32"]["top1"]
    assert rows["m.sqz, int8 from the file"]["bytes"] == sqz.stat().st_size
    assert all(r["latency_b1_ms"] > 0 and r["throughput_b64"] > 0 and 0 <= r["top1"] <= 1
               for r in rows.values())
    assert result["test_images"] == 40
    # every model timed in each of the 3 rounds; the file's int8 set against ONNX Runtime's
    # int8 of the dense model round by round
    assert all(len(r["rounds_latency_b1_ms"]) == len(r["rounds_throughput_b64"]) == 3
               for r in rows.values())
    versus = result["head_to_head"]
    assert (versus["ours"], versus["theirs"]) == ("m.sqz, int8 from the file",
                                                  "dense, ONNX Runtime static int8 (QDQ)")
    ours, theirs = rows[versus["ours"]], rows[versus["theirs"]]
    ratios = [t / o for o, t in zip(ours["rounds_latency_b1_ms"],
                                    theirs["rounds_latency_b1_ms"])]
    assert versus["speedup_b1_median"] == pytest.approx(sorted(ratios)[1])
    assert versus["speedup_b64_range"][0] <= versus["speedup_b64_median"] <= \
        versus["speedup_b64_range"][1]
