"""The foundation commands end to end: models, info, train, eval, plot, and their errors."""
import json

import pytest

from squeezelab.cli import main

SMALL = ["--model-arg", "stem_channels=16",
         "--model-arg", "fire_config=[[4,8,8],[4,8,8],[8,16,16],[8,16,16],[8,16,16],[8,16,16],"
                        "[8,24,24],[8,24,24]]"]


def test_models_lists_registry(capsys):
    assert main(["models", "squeezenet1_*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == [
        "squeezenet1_0", "squeezenet1_0_complex_bypass", "squeezenet1_0_simple_bypass",
        "squeezenet1_1"]


def test_info_prints_layer_table_and_totals(capsys):
    assert main(["info", "squeezenet1_0"]) == 0
    out = capsys.readouterr().out
    assert "features.3.squeeze" in out and "classifier.1" in out
    assert "1,248,424 parameters, 819M MACs at 224x224" in out


def test_info_input_size(capsys):
    assert main(["info", "squeezenet_cifar_e4", "--input-size", "32"]) == 0
    assert "727,594 parameters, 224M MACs at 32x32" in capsys.readouterr().out


def test_info_sizes_a_variant_built_with_model_args(capsys):
    # the best recipe's wider model, and it at CIFAR-100: still under a million parameters
    assert main(["info", "fire_groups_cifar", "--model-arg", "widths=[128,256,368]"]) == 0
    assert "965,856 parameters, 74.8M MACs at 32x32" in capsys.readouterr().out
    assert main(["info", "fire_groups_cifar", "--model-arg", "widths=[128,256,368]",
                 "--num-classes", "100"]) == 0
    assert "998,976 parameters" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["info", "squeezenet1_O"], "unknown model 'squeezenet1_O'; did you mean"),
    (["info", "fire_groups_cifar", "--model-arg", "widht=[8,16,32]"],
     "unknown argument(s) ['widht']; it accepts ['activation', 'bypass',"),
    (["info", "fire_groups_cifar", "--model-arg", "widths=3"],
     "model 'fire_groups_cifar' cannot be built with widths=3"),
    (["info", "fire_groups_cifar", "--model-arg", "widths=[8,16"],
     "--model-arg widths: '[8,16' is not a valid YAML value"),
    (["train", "--model", "nope", "--data", "."], "unknown model 'nope'"),
    (["train", "--epochs", "0"], "epochs must be a positive integer, got 0"),
    (["train", "--data", "/does/not/exist", "--epochs", "1"], "/does/not/exist"),
    (["eval", "/no/such/checkpoint.json"], "does not exist"),
    (["plot", "/no/such/run"], "is not a run directory"),
    (["train", "--resume", "/no/such/run"], "cannot resume"),
])
def test_bad_input_exits_2_with_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_train_eval_plot_end_to_end(tmp_path, cifar_tree, capsys):
    run = tmp_path / "runs" / "tiny"
    argv = ["train", "--data", str(cifar_tree), "--epochs", "2", "--batch-size", "50",
            "--limit-train", "200", "--limit-test", "100", "--optimizer", "adamw", "--lr",
            "0.005", "--precision", "fp32", "--channels-last", "false", "--progress", "false",
            "--out-dir", str(tmp_path / "runs"), "--run-name", "tiny", *SMALL]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"run: {run}" in out and "final test top-1" in out
    final = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    # the final line and every epoch record say how top-1 was scored (the run's precision)
    assert final["test_protocol"] == {"precision": "fp32", "flip": False}
    assert f"final test top-1 {final['test_top1']:.4f}, top-5 {final['test_top5']:.4f} " \
           "(fp32, no flip)" in out

    assert main(["eval", str(run), "--data", str(cifar_tree), "--limit", "100",
                 "--json", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "airplane" in out and "truck" in out
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["count"] == 100 and len(result["per_class"]) == 10
    assert f"top-1 {result['top1']:.4f}" in out and "(fp32, no flip)" in out
    assert result["protocol"] == {"precision": "fp32", "flip": False}
    # the best checkpoint was scored on the same 100 test images during training
    assert result["top1"] == pytest.approx(max(
        json.loads(x)["test_top1"] for x in (run / "metrics.jsonl").read_text().splitlines()))
    assert final["epoch"] == 2

    # compare: the best checkpoint (A) against the last one (B) on the same 100 test images,
    # both scored exactly as during training
    last = run / "checkpoints" / "last.json"
    assert main(["compare", str(run), str(last), "--data", str(cifar_tree), "--limit", "100",
                 "--json", str(tmp_path / "compare.json")]) == 0
    out = capsys.readouterr().out
    compared = json.loads((tmp_path / "compare.json").read_text())
    assert compared["images"] == 100
    assert compared["protocol"] == {"precision": "fp32", "flip": False}
    assert "[test, 100 images], both scored fp32, no flip" in out
    assert compared["baseline_top1"] == pytest.approx(result["top1"])
    assert compared["candidate_top1"] == pytest.approx(final["test_top1"])
    diff = compared["candidate_minus_baseline"]
    assert diff == pytest.approx(compared["candidate_top1"] - compared["baseline_top1"])
    assert compared["only_candidate_correct"] - compared["only_baseline_correct"] == round(
        100 * diff)
    low, high = compared["interval_95"]
    assert low <= diff <= high and high - low == pytest.approx(2 * 1.96 * compared["image_se"])
    assert f"B - A  {100 * diff:+.2f} points" in out
    # a model compared with itself: no image tells them apart, and the output says so
    assert main(["compare", str(last), str(last), "--data", str(cifar_tree), "--limit",
                 "100"]) == 0
    out = capsys.readouterr().out
    assert "B - A  +0.00 points, 95% interval +0.00 to +0.00  (only B right on 0 images, " \
           "only A on 0; both fp32, no flip)" in out
    assert "the two models are right on exactly the same images" in out

    png = tmp_path / "curves.png"
    assert main(["plot", str(run), str(run), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    # the same command again: the finished run is kept, the new one goes beside it
    before = (run / "metrics.jsonl").read_text()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{run} holds a finished run, left as it is: this run goes to {run}-2" in out
    assert f"run: {run}-2" in out and (run / "metrics.jsonl").read_text() == before


def test_eval_says_which_weights_it_scores(tmp_path, cifar_tree, capsys):
    """A run's last checkpoint holds the last step's weights and, beside them, their moving
    average, which the run scored: eval says so, and --weights average scores the average."""
    run = tmp_path / "runs" / "ema"
    assert main(["train", "--data", str(cifar_tree), "--epochs", "1", "--batch-size", "50",
                 "--limit-train", "200", "--limit-test", "100", "--ema-decay", "0.9",
                 "--precision", "fp32", "--channels-last", "false", "--progress", "false",
                 "--out-dir", str(tmp_path / "runs"), "--run-name", "ema", *SMALL]) == 0
    recorded = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["test_loss"]
    capsys.readouterr()
    last = str(run / "checkpoints" / "last")
    scored = {}
    for weights in ("saved", "average"):
        out_json = tmp_path / f"{weights}.json"
        assert main(["eval", last, "--weights", weights, "--data", str(cifar_tree), "--limit",
                     "100", "--json", str(out_json)]) == 0
        scored[weights] = (capsys.readouterr().out, json.loads(out_json.read_text()))
    out, result = scored["saved"]
    note = ("note: these are the training weights of step 4; the run scored their moving "
            "average, kept beside them: squeezelab eval --weights average scores that")
    assert note in out
    assert result["weights"] == "saved" and result["loss"] != pytest.approx(recorded)
    out, result = scored["average"]
    assert f"{last} (its weight average) on {cifar_tree} [test, 100 images]" in out
    assert "note:" not in out and result["weights"] == "average"
    # the run scored the average on the same 100 test images
    assert result["loss"] == pytest.approx(recorded, rel=1e-5)
    # the run directory (its best: the average) needs no note
    assert main(["eval", str(run), "--data", str(cifar_tree), "--limit", "100"]) == 0
    assert "note:" not in capsys.readouterr().out
    # compare notes it under the side that is a last checkpoint
    assert main(["compare", str(run), last, "--data", str(cifar_tree), "--limit", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    b_line = next(i for i, line in enumerate(lines) if line.startswith("  B  top-1"))
    assert lines[b_line + 1].strip().startswith(note) and sum(note in x for x in lines) == 1


def test_eval_refuses_data_with_other_classes(tmp_path, cifar_tree, capsys):
    import shutil

    run = tmp_path / "runs" / "tiny"
    assert main(["train", "--data", str(cifar_tree), "--epochs", "1", "--batch-size", "50",
                 "--limit-train", "100", "--limit-test", "50", "--precision", "fp32",
                 "--channels-last", "false", "--progress", "false", "--out-dir",
                 str(tmp_path / "runs"), "--run-name", "tiny", *SMALL]) == 0
    other = tmp_path / "other"
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            shutil.copytree(cifar_tree / split / name, other / split / name)
    assert main(["eval", str(run), "--data", str(other)]) == 2
    assert "10-class model, but" in capsys.readouterr().err
    assert main(["compare", str(run), str(run), "--data", str(other)]) == 2
    assert f"{run} is a 10-class model, but {other} has 2 classes" in capsys.readouterr().err


@pytest.fixture
def flip_pair(tmp_path, cifar_tree):
    """One tiny model saved twice with the same weights: A records training without
    test-time flip, B with it (as a run with test_time_flip: true records it)."""
    import torch

    from squeezelab.checkpoint import save_checkpoint
    from squeezelab.data import load_split
    from squeezelab.models import create_model

    torch.manual_seed(0)
    model = create_model("squeezenet_cifar", num_classes=10, stem_channels=16,
                         fire_config=[[4, 8, 8]] * 8)
    classes = load_split(str(cifar_tree), "test", limit=10, progress=False).classes
    paths = {}
    for name, flip in (("A", False), ("B", True)):
        meta = {"config": {"data": str(cifar_tree), "test_time_flip": flip},
                "class_names": list(classes)}
        paths[name] = str(save_checkpoint(tmp_path / name, model, meta=meta))
    return paths


def test_compare_scores_both_models_the_same_way(flip_pair, cifar_tree, tmp_path, capsys):
    """B was trained with flip-averaging, A without: both are scored as A is (or as
    --test-time-flip says), so identical weights give no difference, and the output says how."""
    a, b = flip_pair["A"], flip_pair["B"]
    assert main(["compare", a, b, "--limit", "100", "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "note: B was trained with test-time flip, A without; both are scored as A " \
           "(fp32, no flip)" in out
    assert "B - A  +0.00 points" in out and "both fp32, no flip)" in out
    assert "the two models are right on exactly the same images" in out
    assert json.loads((tmp_path / "c.json").read_text())["protocol"] == {
        "precision": "fp32", "flip": False}
    assert main(["compare", a, b, "--limit", "100", "--test-time-flip", "true"]) == 0
    out = capsys.readouterr().out
    assert "note:" not in out and "both scored fp32, flip-averaged" in out
    assert "B - A  +0.00 points" in out
    # eval of B alone follows B's own record, and says so
    assert main(["eval", b, "--limit", "100"]) == 0
    assert "(fp32, flip-averaged)" in capsys.readouterr().out


def test_train_epoch_lines_say_how_top1_was_scored(tmp_path, cifar_tree, capsys):
    assert main(["train", "--data", str(cifar_tree), "--epochs", "1", "--batch-size", "50",
                 "--limit-train", "100", "--limit-test", "50", "--precision", "fp32",
                 "--channels-last", "false", "--test-time-flip", "true", "--out-dir",
                 str(tmp_path / "runs"), "--run-name", "r", *SMALL]) == 0
    out = capsys.readouterr().out
    epoch = next(line for line in out.splitlines() if line.startswith("epoch "))
    assert "test_top5" in epoch and "(fp32, flip-averaged)" in epoch
    assert "(fp32, flip-averaged)" in out.split("final test top-1")[1]


def test_resume_refuses_other_images_extends_with_epochs_and_names_unfinished_runs(
        tmp_path, cifar_tree, capsys):
    """The traps of re-running and continuing a run from the command line."""
    runs = tmp_path / "runs"
    argv = ["train", "--data", str(cifar_tree), "--epochs", "1", "--batch-size", "50",
            "--limit-train", "100", "--limit-test", "50", "--precision", "fp32",
            "--channels-last", "false", "--progress", "false", "--out-dir", str(runs),
            "--run-name", "r", *SMALL]
    assert main(argv) == 0
    run = runs / "r"
    capsys.readouterr()
    # scored on other images: refused, naming the flag, before anything is loaded
    assert main(["train", "--resume", str(run), "--epochs", "2", "--limit-test", "20"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot resume {run} with limit_test 20: the run was trained "
                          "and scored with limit_test 50") and err.count("\n") == 1
    assert "drop --limit-test" in err
    assert main(["train", "--resume", str(run), *SMALL]) == 2
    assert "--model-arg cannot change the model of a resumed run" in capsys.readouterr().err
    # more epochs: allowed, said, recorded
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "epochs 1 -> 2: the learning-rate schedule is laid again" in out
    assert "epochs: 2" in (run / "config.yaml").read_text().splitlines()
    # an unfinished run of that name: one error line with the command that continues it
    (run / "summary.json").unlink()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {run} holds an unfinished run (interrupted, or still running): "
                   f"continue it with `squeezelab train --resume {run}`, or start a new run "
                   "beside it with --run-name NEW_NAME\n")


def test_report_run_prints_on_rank_0_only(tmp_path, capsys):
    import torch.nn as nn

    from squeezelab.cli.config_flags import report_run
    from squeezelab.train.loop import RunResult

    history = [{"test_top1": 0.5, "test_top5": 0.9}]
    assert report_run(RunResult(tmp_path, nn.Identity(), history, is_main=False)) == 0
    assert capsys.readouterr().out == ""
    assert report_run(RunResult(tmp_path, nn.Identity(), history), " after DSD") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"run: {tmp_path}", "final test top-1 0.5000, top-5 0.9000 after DSD"]
    assert report_run(RunResult(tmp_path, nn.Identity(), history, interrupted=True)) == 130
    assert capsys.readouterr().out == ""
    # a record that says how it was scored: the label, and why eval's figure may differ
    history = [{"test_top1": 0.5, "test_top5": 0.9,
                "test_protocol": {"precision": "bf16", "flip": True}}]
    assert report_run(RunResult(tmp_path, nn.Identity(), history)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "final test top-1 0.5000, top-5 0.9000 (bf16, flip-averaged: the run's training "
        "precision; squeezelab eval scores fp32)")


@pytest.mark.parametrize("command", ["train", "compress", "dsd", "compare"])
def test_help_shows_real_defaults_and_never_none(command, capsys):
    # An option left unset defaults to None (the recipe or the checkpoint decides): its help
    # says what happens then, and "(default: None)" would only be noise.
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in out
    assert "(default: " in out  # real defaults are still shown
    if command == "train":  # every training flag says what it does, not only its default
        assert "--subset-seed SUBSET_SEED seed that picks the --limit-train/--limit-test " \
               "subset; unset: --seed" in out
        # the optimizer settings a flag leaves unset come from the model, else built-ins
        assert "--lr LR peak learning rate; unset: the model's own default when the run uses " \
               "its optimizer, else 0.1" in out


def test_eval_and_compare_with_ten_crops(flip_pair, cifar_tree, tmp_path, capsys):
    """--crops 10 on a 32-pixel model: 32-pixel crops of the images padded by 4 black pixels,
    the label says so, the JSON records it, and the figure is the library's."""
    from squeezelab.data import load_split
    from squeezelab.inference import load_model
    from squeezelab.train.evaluate import EvalProtocol, evaluate_data

    a, b = flip_pair["A"], flip_pair["B"]
    assert main(["eval", a, "--limit", "100", "--crops", "10",
                 "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "(fp32, 10-crop (32 px, images padded by 4 px))" in out
    record = json.loads((tmp_path / "e.json").read_text())
    protocol = EvalProtocol(crops=10, crop_size=32, crop_pad=4)
    assert record["protocol"] == protocol.to_dict()
    model, meta = load_model(a)
    data = load_split(meta["config"]["data"], "test", limit=100, progress=False)
    assert record["top1"] == evaluate_data(model, data, protocol)["top1"]
    assert main(["compare", a, b, "--limit", "10", "--crops", "144", "--crop-pad", "0"]) == 0
    assert "both scored fp32, 144-crop (32 px)" in capsys.readouterr().out
    assert main(["eval", a, "--limit", "10", "--crops", "10", "--test-time-flip",
                 "false"]) == 2
    assert "averages every crop with its mirror image" in capsys.readouterr().err
    assert main(["eval", a, "--limit", "10", "--crop-pad", "2"]) == 2
    assert "--crop-pad applies to --crops 10 or 144" in capsys.readouterr().err
