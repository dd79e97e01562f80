"""``squeezelab prune | sensitivity | quantize | compress | inspect | export | eval`` end to end
on a tiny trained checkpoint and real CIFAR-10 images, and their errors on bad input."""
import argparse
import json
from pathlib import Path

import pytest
import torch

import squeezelab.compress.format.sqz as sqz_format
from squeezelab.cli import main
from squeezelab.compress import load_compressed, load_compressible, read_sqz, save_compressed
from squeezelab.train import TrainConfig, train

TINY = {"fire_config": [[4, 8, 8]] * 8, "stem_channels": 16}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, cifar_tree, cifar_small):
    """A 1-epoch tiny SqueezeNet trained on 200 images of the class-folder tree."""
    train_data, test_data = cifar_small
    data = train_data.subset(torch.arange(0, 1000, 5)), test_data.subset(torch.arange(0, 300, 3))
    out = tmp_path_factory.mktemp("ckpt")
    cfg = TrainConfig(model="squeezenet_cifar", model_args=TINY, data=str(cifar_tree), epochs=1,
                      batch_size=50, optimizer="adamw", lr=0.005, precision="fp32",
                      channels_last=False, progress=False, out_dir=str(out), run_name="run")
    result = train(cfg, data=data)
    return str(result.run_dir / "checkpoints" / "last.json")


SMALL_DATA = ["--limit-train", "100", "--limit-test", "50", "--batch-size", "50"]


def test_compress_inspect_eval_export(tmp_path, ckpt, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default work directory is relative: keep it in here
    out = tmp_path / "m.sqz"
    rc = main(["compress", ckpt, "-o", str(out), "--sparsity", "0.5", "--prune-rounds", "2",
               "--retrain-epochs", "1", "--retrain-lr", "0.002", "--conv-bits", "4",
               "--classifier-bits", "5", "--centroid-epochs", "1", "--precision", "fp32",
               *SMALL_DATA])
    text = capsys.readouterr().out
    assert rc == 0
    for expected in ("prune round 1/2", "prune round 2/2", "weight sharing", "wrote",
                     "smaller than fp32"):
        assert expected in text
    # the fine-tuning runs go under the runs folder, said at the start and at the end, and
    # nothing is left beside the output
    assert "fine-tuning runs go to runs/m-compress" in text
    assert text.rstrip().endswith("fine-tuning runs: runs/m-compress")
    assert (tmp_path / "runs" / "m-compress" / "prune_1").is_dir()
    assert not (tmp_path / "m_runs").exists()
    # every top-1 says how it was scored: the checkpoint was trained without flip, so fp32
    # without flip, as squeezelab eval scores it
    assert "[dense] sparsity 0.000  top-1 " in text and "(fp32, no flip)" in text
    assert "(top-1: fp32, no flip)" in text
    summary = json.loads((tmp_path / "m.summary.json").read_text())
    assert summary["protocol"] == {"precision": "fp32", "flip": False}
    assert summary["work_dir"] == "runs/m-compress"
    assert all(s["protocol"] == summary["protocol"] for s in summary["steps"])
    assert [s["step"] for s in summary["steps"]] == [
        "dense", "prune_1", "prune_2", "share", "centroids", "loaded"]
    assert summary["config"]["sharing"]["bits"] == {"conv": 4, "linear": 5, "classifier": 5}
    assert summary["config"]["train"]["limit_train"] == 100
    sqz = read_sqz(out)
    assert sqz.meta["compress_config"]["prune"]["sparsity"] == 0.5
    # the file carries how its inputs are prepared: those of the checkpoint it came from
    source_meta = load_compressible(ckpt).meta
    assert {k: sqz.meta[k] for k in ("image_size", "mean", "std")} == {
        k: source_meta[k] for k in ("image_size", "mean", "std")}

    assert main(["inspect", str(out), "--fp32", ckpt]) == 0
    text = capsys.readouterr().out
    assert "features.0.weight" in text and "squeezenet_cifar" in text
    # the recorded top-1 says how compress scored it (the protocol in the file's meta)
    assert f"top-1 recorded at compression: {sqz.meta['top1']:.4f} (fp32, no flip)" in text
    # a file without that record (written before protocols were) says so
    def without_protocol(path, read=sqz_format.read_sqz):
        f = read(path)
        f.meta.pop("protocol")
        return f

    with monkeypatch.context() as m:
        m.setattr(sqz_format, "read_sqz", without_protocol)
        assert main(["inspect", str(out)]) == 0
    assert (f"top-1 recorded at compression: {sqz.meta['top1']:.4f} (scoring not recorded)"
            in capsys.readouterr().out)

    assert main(["eval", str(out), "--limit", "50"]) == 0
    text = capsys.readouterr().out
    # the same 50 balanced test images of the data the file records: the same accuracy
    assert f"top-1 {summary['final_top1']:.4f}" in text and "airplane" in text
    assert "(fp32, no flip)" in text

    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(out), "--onnx", str(onnx_path)]) == 0
    text = capsys.readouterr().out
    assert "with input 1x3x32x32" in text and "max abs diff" in text
    import onnx

    props = {p.key: json.loads(p.value) for p in onnx.load(str(onnx_path)).metadata_props}
    assert props["squeezelab.preprocess"] == {k: sqz.meta[k] for k in ("image_size", "mean",
                                                                        "std")}
    assert props["squeezelab.class_names"][0] == "airplane"
    assert props["squeezelab.model"]["name"] == "squeezenet_cifar"


def test_prune_quality_is_hans_threshold_rule(tmp_path, ckpt, capsys):
    from squeezelab.compress.pruning.magnitude import prunable_parameters

    rc = main(["prune", ckpt, "--quality", "1.0", "--rule", "classifier=0.5", "-o",
               str(tmp_path / "pruned"), "--json", str(tmp_path / "record.json"),
               "--limit-test", "50"])
    assert rc == 0
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["config"]["prune"]["method"] == "threshold"
    assert record["config"]["prune"]["quality"] == 1.0
    source = load_compressible(ckpt).model
    back = load_compressible(tmp_path / "pruned")
    params = dict(source.named_parameters())
    for name in prunable_parameters(source):
        w, q = params[name].detach(), 0.5 if name == "classifier.1.weight" else 1.0
        assert torch.equal(back.masks[name], w.abs() >= q * w.std(correction=0)), name
    # --quality with --sparsity: one error line, status 2
    assert main(["prune", ckpt, "--quality", "1.0", "--sparsity", "0.5", "-o",
                 str(tmp_path / "x")]) == 2
    assert "give quality, not sparsity" in capsys.readouterr().err


def test_prune_writes_masks_and_sensitivity(tmp_path, ckpt, capsys):
    rc = main(["prune", ckpt, "--sparsity", "0.5", "--rule", "classifier=0.2", "-o",
               str(tmp_path / "pruned"), "--json", str(tmp_path / "record.json"),
               "--limit-test", "50"])
    assert rc == 0
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["sparsity"] > 0.45
    text = capsys.readouterr().out
    assert "overall sparsity" in text
    # the model written is scored before and after, and the lines say how
    assert f"before: top-1 {record['top1_before']:.4f} (fp32, no flip, 50 test images)" in text
    assert f"after:  top-1 {record['top1_after']:.4f} (fp32, no flip) (" in text
    assert record["protocol"] == {"precision": "fp32", "flip": False}
    assert record["steps"][-1]["top1"] == record["top1_after"]
    back = load_compressible(tmp_path / "pruned")
    assert back.meta["image_size"] == [32, 32]  # the record travels with the pruned model
    layer = back.masks.layer_sparsity()
    assert layer["classifier.1.weight"] == pytest.approx(0.2, abs=0.01)
    assert layer["features.0.weight"] == pytest.approx(0.5, abs=0.01)
    w = back.model.features[0].weight
    assert torch.all(w[~back.masks["features.0.weight"]] == 0)

    rc = main(["sensitivity", ckpt, "--sparsities", "0.5", "0.9", "--limit-test", "50",
               "-o", str(tmp_path / "sens")])
    assert rc == 0
    captured = capsys.readouterr()
    assert "classifier.1.weight" in captured.out
    assert "top-1 (fp32, no flip) with one layer pruned" in captured.out
    # a progress bar over the 1 + 26 layers x 2 sparsities evaluations
    assert "sensitivity" in captured.err and "53/53" in captured.err
    assert main(["sensitivity", ckpt, "--sparsities", "0.5", "--limit-test", "50",
                 "--progress", "false", "-o", str(tmp_path / "sens-quiet")]) == 0
    assert "sensitivity" not in capsys.readouterr().err
    recorded = json.loads((tmp_path / "sens" / "sensitivity.json").read_text())
    assert recorded["protocol"] == {"precision": "fp32", "flip": False}
    assert len(recorded["top1"]) == 26 and recorded["images"] == 50
    suggested = json.loads((tmp_path / "sens" / "suggested.json").read_text())
    assert set(suggested.values()) <= {0.0, 0.5, 0.9}
    assert (tmp_path / "sens" / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"


def test_prune_channels_rebuilds_a_smaller_model(tmp_path, ckpt, capsys, monkeypatch):
    from squeezelab.compress.pruning.channels import remove_channels, smallest_channels
    from squeezelab.inference import load_model, preprocess_of

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "slim"
    assert main(["prune", ckpt, "--channels", "0.25", "--retrain-epochs", "1",
                 "--retrain-lr", "0.002", "-o", str(out), "--json", str(tmp_path / "r.json"),
                 *SMALL_DATA]) == 0
    text = capsys.readouterr().out
    # every Fire has a bypass here, so only the squeeze layers can lose channels: 4 -> 3
    assert text.count(".squeeze ") == 8 and text.count("-1 channels") == 8
    assert "before: top-1" in text and "after:  top-1" in text and "img/s" in text
    assert "(fp32, no flip, 50 test images)" in text and " (fp32, no flip) (" in text
    # the fine-tuning run goes under the runs folder, announced first and last
    assert "fine-tuning run goes to runs/slim-channels/channels" in text
    assert "fine-tuning run: runs/slim-channels/channels" in text
    assert (tmp_path / "runs" / "slim-channels" / "channels" / "metrics.jsonl").is_file()
    assert not (tmp_path / "slim_runs").exists()
    slim, meta = load_model(out)
    source = load_compressible(ckpt).model
    expected, report = remove_channels(source, smallest_channels(source, 0.25))
    assert sum(p.numel() for p in slim.parameters()) == report.params_after
    assert report.params_after < report.params_before
    assert [list(f) for f in slim.spec["kwargs"]["fire_config"]] == [[3, 8, 8]] * 8
    record = meta["channel_prune"]
    assert record["before"]["protocol"] == record["after"]["protocol"] == {
        "precision": "fp32", "flip": False}
    assert record["after"]["parameters"] == report.params_after
    assert record["after"]["macs"] < record["before"]["macs"]
    assert preprocess_of(meta).image_size == (32, 32)  # the slim model can still predict
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["after"] == record["after"] and written["channels"] == "0.25"
    assert "environment" in written and written["command"].startswith("squeezelab ")

    # a model with no dead channel: nothing removed, said plainly
    assert main(["prune", ckpt, "--channels", "dead", "--limit-test", "50",
                 "-o", str(tmp_path / "same")]) == 0
    assert "no channel to remove" in capsys.readouterr().out
    same, _ = load_model(tmp_path / "same")
    assert sum(p.numel() for p in same.parameters()) == report.params_before


def test_prune_dead_channels_counts_near_zero_filters_under_dead_eps(tmp_path, ckpt, capsys):
    from squeezelab.checkpoint import save_checkpoint
    from squeezelab.inference import load_model
    from squeezelab.models import create_model

    torch.manual_seed(0)  # no BatchNorm, no bypass: the stem's channels are removable
    model = create_model("squeezenet_cifar_e2", num_classes=10, **TINY)
    with torch.no_grad():
        model.features[0].weight[3] *= 1e-7  # what group lasso leaves: tiny, not zero
        model.features[0].bias[3] = -1.0  # its ReLU output is 0 either way
    meta = {k: load_compressible(ckpt).meta[k] for k in ("config", "class_names")}
    save_checkpoint(tmp_path / "e2", model, meta=meta)
    assert main(["prune", str(tmp_path / "e2"), "--channels", "dead", "--limit-test", "50",
                 "-o", str(tmp_path / "kept")]) == 0
    assert "no channel to remove" in capsys.readouterr().out
    assert main(["prune", str(tmp_path / "e2"), "--channels", "dead", "--dead-eps", "1e-3",
                 "--limit-test", "50", "-o", str(tmp_path / "cut")]) == 0
    text = capsys.readouterr().out
    assert "features.0" in text and "-1 channels" in text
    cut, _ = load_model(tmp_path / "cut")
    assert cut.features[0].out_channels == TINY["stem_channels"] - 1
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(cut(x), model.eval()(x), atol=1e-4)


def test_quantize_methods(tmp_path, ckpt, cifar_tree, capsys):
    out = tmp_path / "k.sqz"
    assert main(["quantize", ckpt, "--method", "kmeans", "--bits", "3", "--limit-test", "50",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "before: top-1" in text and "after:  top-1" in text
    assert {e["weight_bits"] for e in read_sqz(out).entries if e["encoding"] == "shared"} == {3}
    assert read_sqz(out).meta["mean"] == load_compressible(ckpt).meta["mean"]
    # the file as loaded back is the model the command quantized: the checkpoint quantized
    # in memory with the config the file records computes the same outputs
    from squeezelab.compress import WeightSharingConfig, share_weights_

    expected = load_compressible(ckpt).model
    share_weights_(expected, WeightSharingConfig.from_dict(
        read_sqz(out).meta["quantize"]["config"]))
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(load_compressed(out)(x), expected.eval()(x), atol=1e-6)
    # ... and scores the top-1 the command printed for it, on the same 50 test images
    import re

    after = re.search(r"after:  top-1 (\d\.\d{4})", text).group(1)
    assert main(["eval", str(out), "--data", str(cifar_tree), "--limit", "50",
                 "--test-time-flip", "false"]) == 0
    assert f"top-1 {after}" in capsys.readouterr().out
    report = tmp_path / "int8-report.json"
    run_dir = str(Path(ckpt).parents[1])  # a run directory stands for its best checkpoint
    assert main(["quantize", run_dir, "--method", "int8", "--limit-test", "50", "-o",
                 str(tmp_path / "int8"), "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["method"] == "int8" and data["size_bytes"] < data["fp32_bytes"]
    assert data["protocol"] == {"precision": "fp32", "flip": False}
    assert data["output"] == str(tmp_path / "int8.json") and "command" in data


@pytest.mark.parametrize("method, options", [
    ("int8", []), ("xnor", []), ("binary", []), ("fixed", ["--bits", "6"]),
    ("lowrank", ["--energy", "0.5"]), ("pq", ["--num-clusters", "16"]),
    ("rq", ["--num-clusters", "16"]), ("kmeans", ["--bits", "3"]),
])
def test_quantize_writes_a_model_that_loads_back(tmp_path, ckpt, capsys, method, options):
    """-o is a model file, not a report: squeezelab eval scores it exactly as quantize's
    'after' line, and load_model rebuilds the quantized model (same outputs)."""
    from squeezelab.compress.quantization.registry import (
        QuantizeOptions,
        quantize_,
        quantizer_config,
    )
    from squeezelab.data import BatchLoader
    from squeezelab.inference import load_model
    from squeezelab.train.data import load_run_data

    out = tmp_path / method
    assert main(["quantize", ckpt, "--method", method, *options, "--limit-test", "50",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    after = float(text.split("after:  top-1 ")[1].split()[0])
    assert "after:  top-1 " + f"{after:.4f} (fp32, no flip)" in text
    assert main(["eval", str(out), "--limit", "50"]) == 0
    assert f"top-1 {after:.4f}" in capsys.readouterr().out

    # the same quantization in memory: the loaded file computes what it computes
    src = load_compressible(ckpt)
    bits = {"bits": int(options[1])} if options[:1] == ["--bits"] else {}
    kwargs = {"energy": float(options[1])} if method == "lowrank" else {}
    if method in ("pq", "rq"):
        kwargs = {"num_clusters": 16}
    config = quantizer_config(method, QuantizeOptions(**bits, **kwargs))
    calibration = []
    if method == "int8":
        test = load_run_data({**src.meta["config"], "limit_test": 50, "progress": False},
                             train=False).test
        loader = BatchLoader(test, 64, train=False, augment=None)
        loader.set_epoch(0)
        calibration = [b for _, b in zip(range(4), loader)]
    quantize_(src.model, config, calibration)
    loaded, meta = load_model(out)
    assert meta["quantizer"]["method"] == method
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (loaded(x) - src.model.eval()(x)).abs().max().item() <= 1e-6
    assert [type(m).__name__ for m in loaded.modules()] == [
        type(m).__name__ for m in src.model.modules()]


def test_prune_says_why_it_cannot_score_a_checkpoint_without_a_data_record(tmp_path, ckpt,
                                                                           capsys):
    from squeezelab.checkpoint import save_checkpoint

    src = load_compressible(ckpt)
    save_checkpoint(tmp_path / "bare", src.model, meta={"class_names": src.meta["class_names"]})
    assert main(["prune", str(tmp_path / "bare"), "--sparsity", "0.5", "-o",
                 str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    assert (f"top-1 not measured: {tmp_path / 'bare'} records no training data and no --data "
            "was given; pass --data to score it") in text
    assert "before: top-1" not in text and "overall sparsity" in text


@pytest.mark.parametrize("argv, message", [
    (["prune", "missing.json", "--sparsity", "0.5", "-o", "x"], "does not exist"),
    (["prune", "CKPT", "--sparsity", "1.5", "-o", "x"], r"sparsity must be in \[0, 1\), got 1.5"),
    (["quantize", "CKPT", "--method", "ternary", "-o", "x.json"], "--method must be one of"),
    (["compress", "CKPT", "-o", "model.bin"], "must name a .sqz file"),
    (["compress", "CKPT", "-o", "m.sqz", "--conv-bits", "20"], "must be an integer in 1..16"),
    (["prune", "CKPT", "--rule", "conv3x3", "-o", "x"], "expects LAYER=VALUE"),
    (["inspect", "nothing.sqz"], "does not exist"),
    (["prune", "CKPT", "--sparsity", "0.5", "-o", "out", "--json", "out.json"],
     "is the output checkpoint's own JSON file"),
    (["prune", "CKPT", "--channels", "half", "-o", "x"],
     r"--channels takes a fraction in \[0, 1\) or 'dead', got 'half'"),
    (["prune", "CKPT", "--channels", "1.0", "-o", "x"], r"fraction must be in \[0, 1\)"),
    (["prune", "CKPT", "--channels", "0.2", "--sparsity", "0.5", "-o", "x"],
     "give one or the other"),
    (["quantize", ".", "--method", "int8", "-o", "x.json"],
     r"checkpoints/last.json does not exist \(give a checkpoint or a run directory\)"),
])
def test_bad_input_exits_2(tmp_path, ckpt, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    argv = [ckpt if a == "CKPT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:")
    import re

    assert re.search(message, err), err


def test_fine_tuning_data_is_the_checkpoints_own_subset(cifar_tree):
    """A checkpoint trained with seed 1 on the seed-0 subset (as the benchmarks' runs are) is
    fine-tuned on that subset, not on the one seed 1 would pick."""
    from squeezelab.cli.compress_common import _load_data, _train_section
    from squeezelab.data import load_split

    saved = {"config": {"data": str(cifar_tree), "seed": 1, "subset_seed": 0,
                        "limit_train": 100, "limit_test": 20}}
    section = _train_section(argparse.Namespace(), saved)
    train_data, test_data = _load_data(section)
    for split, got in (("train", train_data), ("test", test_data)):
        want = load_split(str(cifar_tree), split, limit=section[f"limit_{split}"], seed=0,
                          progress=False)
        other = load_split(str(cifar_tree), split, limit=section[f"limit_{split}"], seed=1,
                           progress=False)
        assert torch.equal(got.images, want.images) and torch.equal(got.labels, want.labels)
        assert not torch.equal(got.images, other.images)


def _parse(argv):
    from squeezelab.cli import build_parser

    return build_parser().parse_args(argv)


def test_compress_flags_over_a_recipe_build_the_workflows_config(ckpt):
    """The command's config is the workflow's compress_config_for: the recipe (whose
    fold_batchnorm the command once dropped), the checkpoint's data, then the flags."""
    from squeezelab.cli.compress_commands import _compress_config
    from squeezelab.workflows.deep_compression import compress_config_for

    recipe = str(Path(__file__).resolve().parents[2] / "recipes" / "compress_cifar10_fast.yaml")
    args = _parse(["compress", ckpt, "-o", "x.sqz", "--recipe", recipe])
    cfg = _compress_config(args, ckpt)
    assert cfg == compress_config_for(ckpt, recipe)
    assert cfg.fold_batchnorm is True and cfg.to_dict()["fold_batchnorm"] is True
    saved = load_compressible(ckpt).meta["config"]
    assert (cfg.train["data"], cfg.train["precision"]) == (saved["data"], "fp32")
    assert cfg.train["optimizer"] == "adamw" and cfg.train["weight_decay"] == 0.05  # recipe's
    args = _parse(["compress", ckpt, "-o", "x.sqz", "--recipe", recipe, "--rule",
                   "classifier=0.1,squeeze=0.2", "--layer-bits", "squeeze=3", "--conv-bits", "6",
                   "--retrain-epochs", "0", "--limit-train", "100", "--seed", "4",
                   "--float-dtype", "float16", "--coder", "huffman", "--entropy-weight", "0.02"])
    cfg = _compress_config(args, ckpt)
    assert (cfg.float_dtype, cfg.coder) == ("float16", "huffman")
    assert (compress_config_for(ckpt, recipe).float_dtype,
            compress_config_for(ckpt, recipe).coder) == ("float32", "auto")
    # one rule changed, the recipe's others kept; bits likewise
    assert cfg.prune.rules == {"features.0.*": 0.3, "classifier": 0.1, "squeeze": 0.2}
    assert cfg.prune.sparsity == 0.72 and cfg.fold_batchnorm is True
    assert cfg.sharing.bits == {"conv": 6, "classifier": 5, "squeeze": 3}
    assert cfg.sharing.entropy_weight == 0.02
    assert (cfg.retrain_epochs, cfg.train["limit_train"], cfg.train["seed"]) == (0, 100, 4)
    args = _parse(["compress", ckpt, "-o", "x.sqz", "--recipe", recipe, "--no-prune",
                   "--no-share"])
    cfg = _compress_config(args, ckpt)
    assert cfg.prune is None and cfg.sharing is None and cfg.distill is None
    # --distill: 'dense' for the defaults, or settings (the teacher still the dense model)
    for spec, want in (("dense", ("dense", 4.0, 0.9, "kd")),
                       ("T=2,alpha=0.5,mode=logits", ("dense", 2, 0.5, "logits"))):
        d = _compress_config(_parse(["compress", ckpt, "-o", "x.sqz", "--distill", spec]),
                             ckpt).distill
        assert (d.teacher, d.temperature, d.alpha, d.mode) == want
    with pytest.raises(ValueError, match=r"--distill: alpha must be in \[0, 1\], got 3"):
        _compress_config(_parse(["compress", ckpt, "-o", "x.sqz", "--distill", "alpha=3"]), ckpt)


def test_compress_command_and_benchmark_write_the_same_file(tmp_path, ckpt, monkeypatch,
                                                            capsys):
    """``squeezelab compress --recipe`` and benchmarks/compress_cifar.py build their config
    with the one function, so from one checkpoint and recipe they write the same bytes; the
    header records every setting, and the BatchNorm the recipe folds is gone from the file."""
    import yaml
    from benchmark_scripts import load_benchmark

    from squeezelab.workflows.deep_compression import compress_config_for

    monkeypatch.chdir(tmp_path)  # the default fine-tuning run directories go under here
    recipe = tmp_path / "tiny_compress.yaml"
    recipe.write_text(yaml.safe_dump({"compress": {
        "prune": {"sparsity": 0.5}, "retrain_epochs": 1, "retrain_lr": 0.002,
        "sharing": {"bits": {"conv": 4, "classifier": 5}}, "centroid_epochs": 1,
        "fold_batchnorm": True, "train": {"limit_train": 100, "limit_test": 50,
                                          "batch_size": 50}}}))
    out = tmp_path / "m.sqz"
    assert main(["compress", ckpt, "--recipe", str(recipe), "-o", str(out)]) == 0
    from_cli = out.read_bytes()
    header = read_sqz(out).meta
    assert header["compress_config"] == compress_config_for(ckpt, recipe).to_dict()
    assert header["compress_config"]["fold_batchnorm"] is True
    assert "fold_bn" in [s["step"] for s in header["steps"]]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in load_compressed(out).modules())

    out.unlink()
    bench = load_benchmark("compress_cifar")
    assert bench.main([ckpt, "--recipe", str(recipe), "--out", str(out),
                       "-o", str(tmp_path / "result.json")]) == 0
    assert out.read_bytes() == from_cli
    assert json.loads((tmp_path / "result.json").read_text())["sqz_bytes"] == len(from_cli)


def test_quantize_methods_come_from_the_registry(ckpt, monkeypatch):
    """A quantizer is one registration: it appears in --method's help and the command builds
    its config through it; an unknown method is refused naming the registered ones."""
    from squeezelab.cli.compress_commands import _quant_config
    from squeezelab.compress.quantization import registry
    from squeezelab.compress.quantization.fixed_point import FixedPointConfig

    for name in registry.quantizer_names():
        cfg = _quant_config(_parse(["quantize", ckpt, "--method", name, "-o", "x"]))
        assert isinstance(cfg, registry.get_quantizer(name).config_class)
    assert _quant_config(_parse(["quantize", ckpt, "--method", "kmeans", "--bits", "3",
                                 "--layer-bits", "classifier=5", "-o", "x"])).bits == {
        "conv": 3, "linear": 3, "classifier": 5}

    calls = []

    def transform(model, config):
        calls.append(config)
        return {}

    class HalfConfig(FixedPointConfig):
        pass

    monkeypatch.setattr(registry, "QUANTIZERS", dict(registry.QUANTIZERS))
    registry.register_quantizer("half", HalfConfig, transform, help="a test method")(
        lambda o: HalfConfig(total_bits=o.bits or 16))
    from squeezelab.cli import build_parser

    assert "half: a test method" in build_parser()._subparsers._group_actions[0].choices[
        "quantize"].format_help()
    cfg = _quant_config(_parse(["quantize", ckpt, "--method", "half", "--bits", "12",
                                "-o", "x"]))
    assert cfg == HalfConfig(total_bits=12)
    registry.quantize_(torch.nn.Linear(2, 2), cfg)
    assert calls == [cfg]
    with pytest.raises(ValueError, match="--method must be one of kmeans, .*, half, got 'x'"):
        _quant_config(_parse(["quantize", ckpt, "--method", "x", "-o", "x"]))


def test_learn_arch_prints_the_widths_and_writes_the_smaller_model(tmp_path, ckpt, capsys,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["learn-arch", ckpt, "-o", str(tmp_path / "learned"), "--learn-epochs", "1",
               "--finetune-epochs", "1", "--width-count", "1", "--gate-lr", "0.6",
               "--json", str(tmp_path / "arch.json"), *SMALL_DATA])
    assert rc == 0
    out = capsys.readouterr().out
    assert "layer                original  learned  linear" in out
    assert "features.4.squeeze" in out and "% of the parameters removed" in out
    record = json.loads((tmp_path / "arch.json").read_text())
    assert record["config"]["width_count"] == 1.0 and record["config"]["gate_lr"] == 0.6
    assert record["after"]["parameters"] < record["before"]["parameters"]
    after = next(line for line in out.splitlines() if line.startswith("after:"))
    assert after.split()[1:4] == ["top-1", f"{record['after']['top1']:.4f}", "(fp32,"]
    assert f"{record['after']['parameters']:,} parameters" in after
    back = load_compressible(tmp_path / "learned")
    assert sum(p.numel() for p in back.model.parameters()) == record["after"]["parameters"]
    with pytest.raises(SystemExit):  # argparse's choices
        main(["learn-arch", ckpt, "-o", str(tmp_path / "x"), "--cost", "flops"])
    assert main(["learn-arch", ckpt, "-o", str(tmp_path / "x"), "--threshold", "1.5"]) == 2
    assert "threshold must be in (0, 1)" in capsys.readouterr().err


def test_prune_drop_fires_removes_whole_fires(tmp_path, ckpt, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["prune", ckpt, "--drop-fires", "2", "--selection-images", "50", "-o",
               str(tmp_path / "shallow"), "--json", str(tmp_path / "fires.json"), *SMALL_DATA])
    assert rc == 0
    record = json.loads((tmp_path / "fires.json").read_text())
    assert len(record["removed"]) == 2 and len(record["skip_fires"]) == 2
    assert record["after"]["parameters"] < record["before"]["parameters"]
    out = capsys.readouterr().out
    assert f"skip_fires {record['skip_fires']}" in out
    assert main(["prune", ckpt, "--drop-fires", "1", "--sparsity", "0.5", "-o",
                 str(tmp_path / "x")]) == 2
    assert "--drop-fires removes whole Fire modules" in capsys.readouterr().err


def test_compress_int8_calibration_then_eval_int8(tmp_path, ckpt, capsys, monkeypatch):
    """--int8-calibration stores activation ranges in the file (with 8-bit dense levels and
    half-precision codebooks beside); the pipeline scores the file as int8 last, and eval
    --int8 runs the file alone as int8 to the same top-1 on the same images."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "q.sqz"
    assert main(["compress", ckpt, "-o", str(out), "--sparsity", "0.5", "--retrain-epochs", "0",
                 "--conv-bits", "4", "--centroid-epochs", "0", "--precision", "fp32",
                 "--float-dtype", "float16", "--dense-bits", "8", "--int8-calibration", "64",
                 *SMALL_DATA]) == 0
    text = capsys.readouterr().out
    assert "int8: activation ranges measured on 64 training images" in text
    summary = json.loads((tmp_path / "q.summary.json").read_text())
    steps = [s["step"] for s in summary["steps"]]
    assert steps[-3:] == ["float16_floats+dense_8bit", "loaded", "int8"]
    int8_top1 = summary["steps"][-1]["top1"]
    assert abs(int8_top1 - summary["final_top1"]) <= 0.1  # 50 images: 5 may flip
    assert read_sqz(out).meta["int8"]["images"] == 64
    assert main(["eval", str(out), "--int8", "--limit", "50"]) == 0
    assert f"top-1 {int8_top1:.4f}" in capsys.readouterr().out
    assert main(["eval", str(out), "--int8", "--precision", "bf16"]) == 2
    assert "--int8 runs its own int8 kernels" in capsys.readouterr().err
    plain = tmp_path / "plain.sqz"
    save_compressed(load_compressible(ckpt).model, plain)
    assert main(["eval", str(plain), "--int8", "--limit", "50"]) == 2
    assert "carries no int8 calibration" in capsys.readouterr().err


def test_prune_distill_teaches_every_kind_of_pruning_from_the_model_before_it(
        tmp_path, ckpt, capsys, monkeypatch):
    from squeezelab.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    kinds = {"weights": ["--sparsity", "0.5"], "channels": ["--channels", "0.25"],
             "fires": ["--drop-fires", "1", "--selection-images", "50"]}
    for name, flags in kinds.items():
        # --progress false (for logs) quiets the fine-tuning runs' bars; the default shows them
        quiet = name != "weights"
        assert main(["prune", ckpt, *flags, "--retrain-epochs", "1", "--retrain-lr", "0.002",
                     "--distill", "T=2,alpha=0.7", "-o", str(tmp_path / name),
                     "--work-dir", str(tmp_path / f"w-{name}"), *SMALL_DATA,
                     *(["--progress", "false"] if quiet else [])]) == 0
        captured = capsys.readouterr()
        assert "distilling from the dense model in every fine-tuning run (kd, T=2, alpha=0.7)" \
            in captured.out
        assert ("epoch 1/1" in captured.err) is not quiet
        (last,) = (tmp_path / f"w-{name}").rglob("last.json")
        meta = load_checkpoint(last).meta
        assert meta["hooks"]["distill"]["alpha"] == 0.7
        assert meta["config"]["progress"] is not quiet
    assert main(["prune", ckpt, "--channels", "0.25", "--distill", "dense",
                 "-o", str(tmp_path / "no")]) != 0
    assert "--distill acts in the retraining: give --retrain-epochs too" in \
        capsys.readouterr().err
