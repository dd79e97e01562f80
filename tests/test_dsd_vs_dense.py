"""benchmarks/dsd_vs_dense.py: the three runs per seed, the JSON it records, and bad input
refused before any training."""
import json
from pathlib import Path

import pytest
import yaml
from benchmark_scripts import load_benchmark
from model_configs import TINY


@pytest.fixture
def recipe(tmp_path, cifar_tree):
    path = tmp_path / "tiny_dsd.yaml"
    path.write_text(yaml.safe_dump({
        "model": "squeezenet_cifar", "model_args": TINY, "data": str(cifar_tree),
        "limit_train": 100, "limit_test": 20, "batch_size": 50, "optimizer": "adamw",
        "lr": 0.01, "schedule": "cosine", "precision": "fp32", "channels_last": False,
        "seed": 0}))
    return path


def run(bench, recipe, tmp_path, *extra):
    out = tmp_path / f"result{len(list(tmp_path.glob('result*')))}.json"
    assert bench.main(["--recipe", str(recipe), "--out-dir", str(tmp_path / "runs"),
                       "-o", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_three_runs_per_seed_and_their_differences(tmp_path, recipe):
    bench = load_benchmark("dsd_vs_dense")
    result = run(bench, recipe, tmp_path, "--epochs", "1-1-1", "--seeds", "0", "1")
    assert result["total_epochs"] == 3 and result["seeds"] == [0, 1]
    assert result["train_images"] == 100 and result["test_images"] == 20
    assert result["config"]["lr"] == 0.01 and result["config"]["epochs"] == 3
    for seed in result["per_seed"]:
        assert seed["dsd_minus_dense"] == pytest.approx(
            seed["dsd_test_top1"] - seed["dense_test_top1"])
        assert seed["dsd_minus_dense_phased"] == pytest.approx(
            seed["dsd_test_top1"] - seed["dense_phased_test_top1"])
        assert [p["phase"] for p in seed["dsd_phases"]] == ["dense", "sparse", "redense"]
        assert seed["dsd_phases"][1]["sparsity"] == pytest.approx(0.4, abs=0.01)
        assert seed["dsd_phases"][2]["sparsity"] == 0.0
    # Both seeds train on the seed-0 subset, and every run's config says so: resuming or
    # re-running it from its config.yaml trains on the same images.
    for run_key in ("dense_run", "dsd_run", "dense_phased_run"):
        saved = yaml.safe_load((Path(result["per_seed"][1][run_key]) / "config.yaml").read_text())
        assert (saved["seed"], saved["subset_seed"], saved["limit_train"]) == (1, 0, 100)
    means = [s["dsd_minus_dense"] for s in result["per_seed"]]
    assert result["dsd_minus_dense"]["mean"] == pytest.approx(sum(means) / 2)

    # A second protocol in the same --out-dir that differs only in its cycles runs beside the
    # first instead of colliding with its run directories.
    cycled = run(bench, recipe, tmp_path, "--epochs", "1-1-1", "--cycles", "2", "--seeds", "0")
    assert cycled["total_epochs"] == 5
    assert [p["phase"] for p in cycled["per_seed"][0]["dsd_phases"]] == [
        "dense", "sparse", "redense", "sparse", "redense"]


def test_from_a_trained_model_and_bad_input_refused_before_training(tmp_path, recipe):
    bench = load_benchmark("dsd_vs_dense")
    with pytest.raises(ValueError, match="sparsity"):
        bench.main(["--recipe", str(recipe), "--sparsity", "1.0", "--out-dir", str(tmp_path)])
    run(bench, recipe, tmp_path, "--epochs", "1-1-1")  # a dense run to start from
    start = next((tmp_path / "runs").glob("dense-s0-*"))
    with pytest.raises(SystemExit, match="SPARSE-REDENSE"):
        bench.main(["--recipe", str(recipe), "--from", str(start), "--epochs", "1-1-1"])
    assert not any((tmp_path / "runs").glob("*from*"))

    result = run(bench, recipe, tmp_path, "--from", str(start), "--epochs", "1-1")
    assert result["from_checkpoint"] and 0.0 <= result["start_test_top1"] <= 1.0
    assert result["total_epochs"] == 2
    assert [p["phase"] for p in result["per_seed"][0]["dsd_phases"]] == ["sparse", "redense"]


def test_layer_selection_prunes_only_the_named_layers(tmp_path, recipe):
    bench = load_benchmark("dsd_vs_dense")
    with pytest.raises(ValueError, match="'stem' matches no prunable parameter"):
        bench.main(["--recipe", str(recipe), "--exclude", "stem", "--out-dir", str(tmp_path)])
    assert not (tmp_path / "dsd_vs_dense").exists() and not list(tmp_path.glob("*s0*"))

    result = run(bench, recipe, tmp_path, "--epochs", "1-1-1", "--exclude", "classifier",
                 "--exclude", "features.0.*")
    assert result["dsd"]["exclude"] == ["classifier", "features.0.*"]
    everything = run(bench, recipe, tmp_path, "--epochs", "1-1-1")["pruned_layers"]
    assert everything[0] == "features.0.weight" and everything[-1] == "classifier.1.weight"
    assert result["pruned_layers"] == everything[1:-1]
    assert result["per_seed"][0]["dsd_run"].endswith(
        "dsd-s0-1-1-1-0.4-not-classifier+features.0.-phase")

    only = run(bench, recipe, tmp_path, "--epochs", "1-1-1", "--layers", "expand3x3")
    assert only["dsd"]["layers"] == ["expand3x3"]
    assert only["pruned_layers"] == [n for n in everything if n.endswith("expand3x3.weight")]
    assert len(only["pruned_layers"]) == 8
    assert only["per_seed"][0]["dsd_run"].endswith("-only-expand3x3-phase")


def test_unseen_rescoring_uses_only_images_outside_the_subset(tmp_path, recipe, cifar_small):
    bench, unseen = load_benchmark("dsd_vs_dense"), load_benchmark("dsd_vs_dense_unseen")
    train = cifar_small[0]
    left_out = unseen.unseen_indices(train.labels, 10, 100, 0)
    from squeezelab.data.sources import balanced_indices
    assert len(left_out) == 900
    assert not set(left_out.tolist()) & set(balanced_indices(train.labels, 10, 100, 0).tolist())

    run(bench, recipe, tmp_path, "--epochs", "1-1-1", "--seeds", "0")
    run(bench, recipe, tmp_path, "--epochs", "1-1-1", "--seeds", "1", "--out-dir",
        str(tmp_path / "runs1"))
    # Results written before the JSON carried its config: read from the dense run's directory.
    legacy = json.loads((tmp_path / "result0.json").read_text())
    del legacy["config"]
    (tmp_path / "result0.json").write_text(json.dumps(legacy))
    out = tmp_path / "unseen.json"
    assert unseen.main([str(tmp_path / "result0.json"), str(tmp_path / "result1.json"),
                        "-o", str(out)]) == 0
    scored = json.loads(out.read_text())
    assert scored["unseen_images"] == 900 and scored["train_images"] == 100
    assert [s["seed"] for s in scored["per_seed"]] == [0, 1]
    # the seed-0 dense model scored by hand on the 900 left-out images gives the same figure
    from squeezelab.checkpoint import model_from_checkpoint
    from squeezelab.data import BatchLoader
    from squeezelab.train.evaluate import evaluate
    model, _ = model_from_checkpoint(next((tmp_path / "runs").glob("dense-s0-*")) /
                                     "checkpoints" / "last.json")
    loader = BatchLoader(train.subset(left_out), 300, train=False, augment=None)
    loader.set_epoch(0)
    assert scored["per_seed"][0]["dense_unseen_top1"] == pytest.approx(
        evaluate(model, loader, 10)["top1"], abs=1e-9)
    for s in scored["per_seed"]:
        assert all(0.0 <= s[f"{arm}_unseen_top1"] <= 1.0 for arm in unseen.ARMS)
        assert s["dsd_minus_dense"] == pytest.approx(s["dsd_unseen_top1"] - s["dense_unseen_top1"])
    assert scored["dsd_minus_dense"]["mean"] == pytest.approx(
        sum(s["dsd_minus_dense"] for s in scored["per_seed"]) / 2)
    for s in scored["per_seed"]:  # the difference is made of the images only one arm gets right
        assert s["dsd_only_correct"] - s["dense_only_correct"] == round(s["dsd_minus_dense"] * 900)
    assert scored["dsd_minus_dense"]["image_se"] > 0


def test_rescoring_the_test_split_reproduces_the_result_with_paired_errors(tmp_path, recipe):
    """--split test scores the images the result was measured on (fp32 here, as the runs
    were): the same top-1 per run, now with the paired error of each difference. It takes
    results trained on the whole training split, which have no unseen images."""
    bench, unseen = load_benchmark("dsd_vs_dense"), load_benchmark("dsd_vs_dense_unseen")
    whole = tmp_path / "whole.yaml"
    whole.write_text(recipe.read_text().replace("limit_train: 100", "limit_train: null"))
    result = run(bench, whole, tmp_path, "--epochs", "1-1-1", "--seeds", "0", "1")
    out = tmp_path / "paired.json"
    assert unseen.main([str(tmp_path / "result0.json"), "--split", "test", "-o", str(out)]) == 0
    scored = json.loads(out.read_text())
    assert scored["split"] == "test" and scored["test_images"] == 20
    for recorded, again in zip(result["per_seed"], scored["per_seed"]):
        for arm in unseen.ARMS:
            assert again[f"{arm}_test_top1"] == pytest.approx(recorded[f"{arm}_test_top1"],
                                                              abs=1e-12)
        assert again["dsd_only_correct"] - again["dense_only_correct"] == round(
            recorded["dsd_minus_dense"] * 20)
    per_seed = [s["dsd_minus_dense"] for s in scored["per_seed"]]
    assert scored["dsd_minus_dense"]["mean"] == pytest.approx(sum(per_seed) / 2)
    # the error bar is zero exactly when the two arms agree on every image
    disagree = any(s["dsd_only_correct"] + s["dense_only_correct"] for s in scored["per_seed"])
    assert (scored["dsd_minus_dense"]["image_se"] > 0) == disagree


def test_unseen_rescoring_refuses_what_it_cannot_score(tmp_path, recipe):
    bench, unseen = load_benchmark("dsd_vs_dense"), load_benchmark("dsd_vs_dense_unseen")
    run(bench, recipe, tmp_path, "--epochs", "1-1-1", "--seeds", "1")
    run(bench, recipe, tmp_path, "--epochs", "1-1-1", "--sparsity", "0.3", "--seeds", "1")
    with pytest.raises(SystemExit, match=r"differs from .* in \['dsd'\]"):
        unseen.main([str(tmp_path / "result0.json"), str(tmp_path / "result1.json")])
    (tmp_path / "other.json").write_text(json.dumps({"benchmark": "compress_cifar"}))
    with pytest.raises(SystemExit, match="not a dsd_vs_dense result"):
        unseen.main([str(tmp_path / "other.json")])

    # The benchmark's seed-1 runs trained on the seed-0 subset and say so: a study started
    # from one can be re-scored. A model trained by `squeezelab train --seed 1` picked its own
    # subset, so the seed-0 subset's left-out images are not unseen by it.
    start = next((tmp_path / "runs").glob("dense-s1-*"))
    run(bench, recipe, tmp_path, "--from", str(start), "--epochs", "1-1")
    assert unseen.read_protocol([str(tmp_path / "result2.json")])[0]["subset_seed"] == 0
    from squeezelab.train import TrainConfig, train
    own = train(TrainConfig.from_yaml(recipe, {"epochs": 1, "seed": 1, "progress": False,
                                               "out_dir": str(tmp_path / "own")}))
    run(bench, recipe, tmp_path, "--from", str(own.run_dir), "--epochs", "1-1",
        "--out-dir", str(tmp_path / "from_own"))
    with pytest.raises(SystemExit, match="trained with limit_train=100 on the seed-1 subset, "
                                         "not on the 100-image seed-0 subset"):
        unseen.main([str(tmp_path / "result3.json")])

    whole = tmp_path / "whole.yaml"
    whole.write_text(recipe.read_text().replace("limit_train: 100", "limit_train: null"))
    run(bench, whole, tmp_path, "--epochs", "1-1-1", "--out-dir", str(tmp_path / "runs2"))
    with pytest.raises(SystemExit, match="no training image is unseen"):
        unseen.main([str(tmp_path / "result4.json")])
