"""``squeezelab quantize | compress | inspect | export | eval`` end to end on a tiny trained
checkpoint and real CIFAR-10 images, and the compression commands' errors on bad input (the
pruning commands: test_prune_cli.py)."""
import argparse
import json
from pathlib import Path

import pytest
import torch
from trained_checkpoint import SMALL_DATA

import squeezelab.compress.format.sqz as sqz_format
from squeezelab.cli import main
from squeezelab.compress import load_compressed, load_compressible, read_sqz, save_compressed


def test_compress_inspect_eval_export(tmp_path, trained_ckpt, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default work directory is relative: keep it in here
    out = tmp_path / "m.sqz"
    rc = main(["compress", trained_ckpt, "-o", str(out), "--sparsity", "0.5", "--prune-rounds", "2",
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
    source_meta = load_compressible(trained_ckpt).meta
    assert {k: sqz.meta[k] for k in ("image_size", "mean", "std")} == {
        k: source_meta[k] for k in ("image_size", "mean", "std")}

    assert main(["inspect", str(out), "--fp32", trained_ckpt]) == 0
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


def test_quantize_methods(tmp_path, trained_ckpt, cifar_tree, capsys):
    out = tmp_path / "k.sqz"
    assert main(["quantize", trained_ckpt, "--method", "kmeans", "--bits", "3",
                 "--limit-test", "50", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "before: top-1" in text and "after:  top-1" in text
    assert {e["weight_bits"] for e in read_sqz(out).entries if e["encoding"] == "shared"} == {3}
    assert read_sqz(out).meta["mean"] == load_compressible(trained_ckpt).meta["mean"]
    # the file as loaded back is the model the command quantized: the checkpoint quantized
    # in memory with the config the file records computes the same outputs
    from squeezelab.compress import WeightSharingConfig, share_weights_

    expected = load_compressible(trained_ckpt).model
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
    run_dir = str(Path(trained_ckpt).parents[1])  # a run directory stands for its best checkpoint
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
def test_quantize_writes_a_model_that_loads_back(tmp_path, trained_ckpt, capsys, method, options):
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
    assert main(["quantize", trained_ckpt, "--method", method, *options, "--limit-test", "50",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    after = float(text.split("after:  top-1 ")[1].split()[0])
    assert "after:  top-1 " + f"{after:.4f} (fp32, no flip)" in text
    assert main(["eval", str(out), "--limit", "50"]) == 0
    assert f"top-1 {after:.4f}" in capsys.readouterr().out

    # the same quantization in memory: the loaded file computes what it computes
    src = load_compressible(trained_ckpt)
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
def test_bad_input_exits_2(tmp_path, trained_ckpt, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    argv = [trained_ckpt if a == "CKPT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:")
    import re

    assert re.search(message, err), err


def test_fine_tuning_data_is_the_checkpoints_own_subset(cifar_tree):
    """A checkpoint trained with seed 1 on the seed-0 subset (as the benchmarks' runs are) is
    fine-tuned on that subset, not on the one seed 1 would pick."""
    from squeezelab.cli.compress_common import load_data, train_section_from_flags
    from squeezelab.data import load_split

    saved = {"config": {"data": str(cifar_tree), "seed": 1, "subset_seed": 0,
                        "limit_train": 100, "limit_test": 20}}
    section = train_section_from_flags(argparse.Namespace(), saved)
    train_data, test_data = load_data(section)
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


def test_compress_flags_over_a_recipe_build_the_workflows_config(trained_ckpt):
    """The command's config is the workflow's compress_config_for: the recipe (whose
    fold_batchnorm the command once dropped), the checkpoint's data, then the flags."""
    from squeezelab.cli.compress_commands import _compress_config
    from squeezelab.workflows.deep_compression import compress_config_for

    recipe = str(Path(__file__).resolve().parents[2] / "recipes" / "compress_cifar10_fast.yaml")
    args = _parse(["compress", trained_ckpt, "-o", "x.sqz", "--recipe", recipe])
    cfg = _compress_config(args, trained_ckpt)
    assert cfg == compress_config_for(trained_ckpt, recipe)
    assert cfg.fold_batchnorm is True and cfg.to_dict()["fold_batchnorm"] is True
    saved = load_compressible(trained_ckpt).meta["config"]
    assert (cfg.train["data"], cfg.train["precision"]) == (saved["data"], "fp32")
    assert cfg.train["optimizer"] == "adamw" and cfg.train["weight_decay"] == 0.05  # recipe's
    args = _parse(["compress", trained_ckpt, "-o", "x.sqz", "--recipe", recipe, "--rule",
                   "classifier=0.1,squeeze=0.2", "--layer-bits", "squeeze=3", "--conv-bits", "6",
                   "--retrain-epochs", "0", "--limit-train", "100", "--seed", "4",
                   "--float-dtype", "float16", "--coder", "huffman", "--entropy-weight", "0.02",
                   "--prune-schedule", "gradual", "--prune-granularity", "kernel",
                   "--reassign-weights"])
    cfg = _compress_config(args, trained_ckpt)
    assert (cfg.float_dtype, cfg.coder, cfg.prune_schedule) == ("float16", "huffman", "gradual")
    assert cfg.reassign_weights is True
    assert compress_config_for(trained_ckpt, recipe).reassign_weights is False
    assert cfg.prune.granularity == "kernel"
    assert compress_config_for(trained_ckpt, recipe).prune.granularity == "element"
    assert (compress_config_for(trained_ckpt, recipe).float_dtype,
            compress_config_for(trained_ckpt, recipe).coder) == ("float32", "auto")
    # one rule changed, the recipe's others kept; bits likewise
    assert cfg.prune.rules == {"features.0.*": 0.3, "classifier": 0.1, "squeeze": 0.2}
    assert cfg.prune.sparsity == 0.72 and cfg.fold_batchnorm is True
    assert cfg.sharing.bits == {"conv": 6, "classifier": 5, "squeeze": 3}
    assert cfg.sharing.entropy_weight == 0.02
    assert (cfg.retrain_epochs, cfg.train["limit_train"], cfg.train["seed"]) == (0, 100, 4)
    args = _parse(["compress", trained_ckpt, "-o", "x.sqz", "--recipe", recipe, "--no-prune",
                   "--no-share"])
    cfg = _compress_config(args, trained_ckpt)
    assert cfg.prune is None and cfg.sharing is None and cfg.distill is None
    # --distill: 'dense' for the defaults, or settings (the teacher still the dense model)
    for spec, want in (("dense", ("dense", 4.0, 0.9, "kd")),
                       ("T=2,alpha=0.5,mode=logits", ("dense", 2, 0.5, "logits"))):
        d = _compress_config(_parse(["compress", trained_ckpt, "-o", "x.sqz", "--distill", spec]),
                             trained_ckpt).distill
        assert (d.teacher, d.temperature, d.alpha, d.mode) == want
    with pytest.raises(ValueError, match=r"--distill: alpha must be in \[0, 1\], got 3"):
        _compress_config(_parse(["compress", trained_ckpt, "-o", "x.sqz", "--distill",
                                 "alpha=3"]), trained_ckpt)


def test_compress_command_and_benchmark_write_the_same_file(
        tmp_path, trained_ckpt, monkeypatch, capsys):
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
    assert main(["compress", trained_ckpt, "--recipe", str(recipe), "-o", str(out)]) == 0
    from_cli = out.read_bytes()
    header = read_sqz(out).meta
    assert header["compress_config"] == compress_config_for(trained_ckpt, recipe).to_dict()
    assert header["compress_config"]["fold_batchnorm"] is True
    assert "fold_bn" in [s["step"] for s in header["steps"]]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in load_compressed(out).modules())

    out.unlink()
    bench = load_benchmark("compress_cifar")
    assert bench.main([trained_ckpt, "--recipe", str(recipe), "--out", str(out),
                       "-o", str(tmp_path / "result.json")]) == 0
    assert out.read_bytes() == from_cli
    assert json.loads((tmp_path / "result.json").read_text())["sqz_bytes"] == len(from_cli)


def test_quantize_methods_come_from_the_registry(trained_ckpt, monkeypatch):
    """A quantizer is one registration: it appears in --method's help and the command builds
    its config through it; an unknown method is refused naming the registered ones."""
    from squeezelab.cli.compress_commands import _quant_config
    from squeezelab.compress.quantization import registry
    from squeezelab.compress.quantization.fixed_point import FixedPointConfig

    for name in registry.quantizer_names():
        cfg = _quant_config(_parse(["quantize", trained_ckpt, "--method", name, "-o", "x"]))
        assert isinstance(cfg, registry.get_quantizer(name).config_class)
    assert _quant_config(_parse(["quantize", trained_ckpt, "--method", "kmeans", "--bits", "3",
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
    cfg = _quant_config(_parse(["quantize", trained_ckpt, "--method", "half", "--bits", "12",
                                "-o", "x"]))
    assert cfg == HalfConfig(total_bits=12)
    registry.quantize_(torch.nn.Linear(2, 2), cfg)
    assert calls == [cfg]
    with pytest.raises(ValueError, match="--method must be one of kmeans, .*, half, got 'x'"):
        _quant_config(_parse(["quantize", trained_ckpt, "--method", "x", "-o", "x"]))


def test_compress_int8_calibration_then_eval_int8(tmp_path, trained_ckpt, capsys, monkeypatch):
    """--int8-calibration stores activation ranges in the file (with 8-bit dense levels and
    half-precision codebooks beside); the pipeline scores the file as int8 last, and eval
    --int8 runs the file alone as int8 to the same top-1 on the same images."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "q.sqz"
    assert main(["compress", trained_ckpt, "-o", str(out), "--sparsity", "0.5",
                 "--retrain-epochs", "0", "--conv-bits", "4", "--centroid-epochs", "0",
                 "--precision", "fp32",
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
    save_compressed(load_compressible(trained_ckpt).model, plain)
    assert main(["eval", str(plain), "--int8", "--limit", "50"]) == 2
    assert "carries no int8 calibration" in capsys.readouterr().err
