"""``squeezelab prune | sensitivity | learn-arch`` end to end on a tiny trained checkpoint and
real CIFAR-10 images: weight, channel and layer pruning, distillation in their fine-tuning, the
sensitivity scan and architecture learning."""
import json

import pytest
import torch
from trained_checkpoint import SMALL_DATA, UNIFORM_TINY

from squeezelab.cli import main
from squeezelab.compress import load_compressible


def prune_record(tmp_path, checkpoint, *flags):
    """``prune CHECKPOINT FLAGS`` into ``tmp_path/pruned``, scored on 50 test images: its
    --json record."""
    assert main(["prune", checkpoint, *flags, "-o", str(tmp_path / "pruned"),
                 "--json", str(tmp_path / "record.json"), "--limit-test", "50"]) == 0
    return json.loads((tmp_path / "record.json").read_text())


def test_prune_quality_is_hans_threshold_rule(tmp_path, trained_ckpt, capsys):
    from squeezelab.compress.pruning.magnitude import prunable_parameters

    record = prune_record(tmp_path, trained_ckpt, "--quality", "1.0", "--rule", "classifier=0.5")
    assert record["config"]["prune"]["method"] == "threshold"
    assert record["config"]["prune"]["quality"] == 1.0
    source = load_compressible(trained_ckpt).model
    back = load_compressible(tmp_path / "pruned")
    params = dict(source.named_parameters())
    for name in prunable_parameters(source):
        w, q = params[name].detach(), 0.5 if name == "classifier.1.weight" else 1.0
        assert torch.equal(back.masks[name], w.abs() >= q * w.std(correction=0)), name
    # --quality with --sparsity: one error line, status 2
    assert main(["prune", trained_ckpt, "--quality", "1.0", "--sparsity", "0.5", "-o",
                 str(tmp_path / "x")]) == 2
    assert "give quality, not sparsity" in capsys.readouterr().err


def test_prune_writes_masks_and_sensitivity(tmp_path, trained_ckpt, capsys):
    record = prune_record(tmp_path, trained_ckpt, "--sparsity", "0.5", "--rule",
                          "classifier=0.2")
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

    rc = main(["sensitivity", trained_ckpt, "--sparsities", "0.5", "0.9", "--limit-test", "50",
               "-o", str(tmp_path / "sens")])
    assert rc == 0
    captured = capsys.readouterr()
    assert "classifier.1.weight" in captured.out
    assert "top-1 (fp32, no flip) with one layer pruned" in captured.out
    # a progress bar over the 1 + 26 layers x 2 sparsities evaluations
    assert "sensitivity" in captured.err and "53/53" in captured.err
    assert main(["sensitivity", trained_ckpt, "--sparsities", "0.5", "--limit-test", "50",
                 "--progress", "false", "-o", str(tmp_path / "sens-quiet")]) == 0
    assert "sensitivity" not in capsys.readouterr().err
    recorded = json.loads((tmp_path / "sens" / "sensitivity.json").read_text())
    assert recorded["protocol"] == {"precision": "fp32", "flip": False}
    assert len(recorded["top1"]) == 26 and recorded["images"] == 50
    suggested = json.loads((tmp_path / "sens" / "suggested.json").read_text())
    assert set(suggested.values()) <= {0.0, 0.5, 0.9}
    assert (tmp_path / "sens" / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"


def test_prune_channels_rebuilds_a_smaller_model(tmp_path, trained_ckpt, capsys, monkeypatch):
    from squeezelab.compress.pruning.channels import remove_channels, smallest_channels
    from squeezelab.inference import load_model, preprocess_of

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "slim"
    assert main(["prune", trained_ckpt, "--channels", "0.25", "--retrain-epochs", "1",
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
    source = load_compressible(trained_ckpt).model
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
    assert main(["prune", trained_ckpt, "--channels", "dead", "--limit-test", "50",
                 "-o", str(tmp_path / "same")]) == 0
    assert "no channel to remove" in capsys.readouterr().out
    same, _ = load_model(tmp_path / "same")
    assert sum(p.numel() for p in same.parameters()) == report.params_before


def test_prune_dead_channels_counts_near_zero_filters_under_dead_eps(
        tmp_path, trained_ckpt, capsys):
    from squeezelab.checkpoint import save_checkpoint
    from squeezelab.inference import load_model
    from squeezelab.models import create_model

    torch.manual_seed(0)  # no BatchNorm, no bypass: the stem's channels are removable
    model = create_model("squeezenet_cifar_e2", num_classes=10, **UNIFORM_TINY)
    with torch.no_grad():
        model.features[0].weight[3] *= 1e-7  # what group lasso leaves: tiny, not zero
        model.features[0].bias[3] = -1.0  # its ReLU output is 0 either way
    meta = {k: load_compressible(trained_ckpt).meta[k] for k in ("config", "class_names")}
    save_checkpoint(tmp_path / "e2", model, meta=meta)
    assert main(["prune", str(tmp_path / "e2"), "--channels", "dead", "--limit-test", "50",
                 "-o", str(tmp_path / "kept")]) == 0
    assert "no channel to remove" in capsys.readouterr().out
    assert main(["prune", str(tmp_path / "e2"), "--channels", "dead", "--dead-eps", "1e-3",
                 "--limit-test", "50", "-o", str(tmp_path / "cut")]) == 0
    text = capsys.readouterr().out
    assert "features.0" in text and "-1 channels" in text
    cut, _ = load_model(tmp_path / "cut")
    assert cut.features[0].out_channels == UNIFORM_TINY["stem_channels"] - 1
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(cut(x), model.eval()(x), atol=1e-4)


def test_prune_says_why_it_cannot_score_a_checkpoint_without_a_data_record(
        tmp_path, trained_ckpt, capsys):
    from squeezelab.checkpoint import save_checkpoint

    src = load_compressible(trained_ckpt)
    save_checkpoint(tmp_path / "bare", src.model, meta={"class_names": src.meta["class_names"]})
    assert main(["prune", str(tmp_path / "bare"), "--sparsity", "0.5", "-o",
                 str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    assert (f"top-1 not measured: {tmp_path / 'bare'} records no training data and no --data "
            "was given; pass --data to score it") in text
    assert "before: top-1" not in text and "overall sparsity" in text


def test_learn_arch_prints_the_widths_and_writes_the_smaller_model(
        tmp_path, trained_ckpt, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["learn-arch", trained_ckpt, "-o", str(tmp_path / "learned"), "--learn-epochs", "1",
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
        main(["learn-arch", trained_ckpt, "-o", str(tmp_path / "x"), "--cost", "flops"])
    assert main(["learn-arch", trained_ckpt, "-o", str(tmp_path / "x"), "--threshold", "1.5"]) == 2
    assert "threshold must be in (0, 1)" in capsys.readouterr().err


def test_prune_drop_fires_removes_whole_fires(tmp_path, trained_ckpt, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["prune", trained_ckpt, "--drop-fires", "2", "--selection-images", "50", "-o",
               str(tmp_path / "shallow"), "--json", str(tmp_path / "fires.json"), *SMALL_DATA])
    assert rc == 0
    record = json.loads((tmp_path / "fires.json").read_text())
    assert len(record["removed"]) == 2 and len(record["skip_fires"]) == 2
    assert record["after"]["parameters"] < record["before"]["parameters"]
    out = capsys.readouterr().out
    assert f"skip_fires {record['skip_fires']}" in out
    assert main(["prune", trained_ckpt, "--drop-fires", "1", "--sparsity", "0.5", "-o",
                 str(tmp_path / "x")]) == 2
    assert "--drop-fires removes whole Fire modules" in capsys.readouterr().err


def test_prune_distill_teaches_every_kind_of_pruning_from_the_model_before_it(
        tmp_path, trained_ckpt, capsys, monkeypatch):
    from squeezelab.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    kinds = {"weights": ["--sparsity", "0.5"], "channels": ["--channels", "0.25"],
             "fires": ["--drop-fires", "1", "--selection-images", "50"]}
    for name, flags in kinds.items():
        # --progress false (for logs) quiets the fine-tuning runs' bars; the default shows them
        quiet = name != "weights"
        assert main(["prune", trained_ckpt, *flags, "--retrain-epochs", "1",
                     "--retrain-lr", "0.002", "--distill", "T=2,alpha=0.7",
                     "-o", str(tmp_path / name),
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
    assert main(["prune", trained_ckpt, "--channels", "0.25", "--distill", "dense",
                 "-o", str(tmp_path / "no")]) != 0
    assert "--distill acts in the retraining: give --retrain-epochs too" in \
        capsys.readouterr().err
