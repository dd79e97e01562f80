"""The Deep Compression pipeline end to end on a tiny SqueezeNet and real CIFAR-10 images."""
import json
from pathlib import Path

import pytest
import torch

from squeezelab.checkpoint import CheckpointError
from squeezelab.compress import (
    Masks,
    PruneConfig,
    WeightSharingConfig,
    load_compressed,
    load_compressible,
    quantize_,
    read_sqz,
    save_compressible,
    share_weights_,
)
from squeezelab.compress.quantization import (
    FixedPointConfig,
    LowRankConfig,
    UniformQuantConfig,
)
from squeezelab.compress.quantization.weight_sharing import shared_layer_bits, shared_modules
from squeezelab.models import create_model
from squeezelab.workflows.deep_compression import CompressConfig, compress

TINY = {"fire_config": [[4, 8, 8]] * 8, "stem_channels": 16}
TRAIN = {"batch_size": 50, "optimizer": "adamw", "precision": "fp32", "channels_last": False,
         "progress": False, "weight_decay": 0.0}


@pytest.fixture(scope="module")
def tiny_data(cifar_small):
    train, test = cifar_small
    return train.subset(torch.arange(0, 1000, 5)), test.subset(torch.arange(0, 300, 3))


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return create_model("squeezenet_cifar", num_classes=10, **TINY)


def test_config_validation_and_round_trip():
    cfg = CompressConfig.from_dict({
        "prune": {"sparsity": 0.6, "rules": {"classifier": 0.3}}, "prune_rounds": 2,
        "sharing": {"bits": {"conv": 4, "classifier": 5}}, "train": {"batch_size": 32}})
    assert isinstance(cfg.prune, PruneConfig) and cfg.prune.rules == {"classifier": 0.3}
    assert CompressConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    with pytest.raises(ValueError, match=r"CompressConfig: unknown key 'sparsity'"):
        CompressConfig.from_dict({"sparsity": 0.5})
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.5"):
        CompressConfig.from_dict({"prune": {"sparsity": 1.5}})
    with pytest.raises(ValueError, match="prune_rounds must be an integer >= 1, got 0"):
        CompressConfig(prune_rounds=0)
    with pytest.raises(ValueError, match=r"train section may not set \['epochs'\]"):
        CompressConfig(train={"epochs": 3})
    with pytest.raises(ValueError, match="unknown key 'batchsize'"):
        CompressConfig(train={"batchsize": 3})
    with pytest.raises(ValueError, match="bits\\['conv'\\] must be an integer in 1..16, got 20"):
        CompressConfig.from_dict({"sharing": {"bits": {"conv": 20}}})
    # distill: the teacher defaults to the dense model; settings checked as DistillConfig's
    cfg = CompressConfig.from_dict({"distill": {"T": 3}})
    assert (cfg.distill.teacher, cfg.distill.temperature, cfg.distill.alpha) == ("dense", 3, 0.9)
    assert CompressConfig.from_dict(cfg.to_dict()) == cfg and CompressConfig().distill is None
    with pytest.raises(ValueError, match=r"distill: unknown key 'temp'"):
        CompressConfig.from_dict({"distill": {"temp": 3}})
    with pytest.raises(ValueError, match="distill must be a DistillConfig, a mapping or None"):
        CompressConfig(distill=3)


def test_pipeline_end_to_end(tmp_path, tiny_data):
    cfg = CompressConfig(
        prune=PruneConfig(sparsity=0.6), prune_rounds=2, retrain_epochs=1, retrain_lr=2e-3,
        sharing=WeightSharingConfig(bits={"conv": 4, "classifier": 5}), centroid_epochs=1,
        centroid_lr=1e-3, train=TRAIN)
    out = tmp_path / "model.sqz"
    source = tiny_model()
    before = {k: v.clone() for k, v in source.state_dict().items()}
    messages = []
    result = compress(source, cfg, out, data=tiny_data, work_dir=tmp_path / "runs",
                      log=messages.append)
    # the caller's model is not changed
    assert all(torch.equal(before[k], v) for k, v in source.state_dict().items())
    steps = [s["step"] for s in result.steps]
    assert steps == ["dense", "prune_1", "prune_2", "share", "centroids", "loaded"]
    # geometric rounds: 1 - 0.4 ** 0.5 then 0.6 of every prunable weight
    assert result.steps[1]["masked_sparsity"] == pytest.approx(1 - 0.4 ** 0.5, abs=5e-3)
    assert result.steps[2]["masked_sparsity"] == pytest.approx(0.6, abs=5e-3)
    for run in ("prune_1", "prune_2", "centroids"):
        lines = (tmp_path / "runs" / run / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 1 and "test_top1" in json.loads(lines[0])
    # the file loads, computes exactly what the in-memory shared model computes
    loaded = load_compressed(out)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))
    assert result.steps[-1]["top1"] == result.steps[-2]["top1"]
    # pruned weights are zero in the loaded model, exactly where the shared model's masks say
    for name, module in result.model.named_modules():
        if hasattr(module, "weight_mask"):
            w = loaded.get_submodule(name).weight
            assert torch.all(w[~module.weight_mask] == 0)
            assert int((w != 0).sum()) <= int(module.weight_mask.sum())
    sqz = read_sqz(out)
    assert sqz.class_names == list(tiny_data[0].classes)
    assert [s["step"] for s in sqz.meta["steps"]] == steps[:-1]
    bits = {e["name"]: e["weight_bits"] for e in sqz.entries if e["encoding"] == "shared"}
    assert bits["classifier.1.weight"] == 5 and bits["features.0.weight"] == 4
    summary = json.loads(result.summary_path.read_text())
    assert result.summary_path == tmp_path / "model.summary.json"
    assert [s["step"] for s in summary["steps"]] == steps
    assert summary["size"]["file_bytes"] == out.stat().st_size
    assert summary["config"] == cfg.to_dict()
    assert summary["final_top1"] == result.steps[-2]["top1"]
    assert any("prune round 2/2" in m for m in messages)
    # compressing to the same output again replaces the earlier phase runs
    again = CompressConfig(prune=PruneConfig(sparsity=0.5), retrain_epochs=1, retrain_lr=2e-3,
                           sharing=None, train=TRAIN)
    messages.clear()
    result = compress(source, again, out, data=tiny_data, work_dir=tmp_path / "runs",
                      log=messages.append)
    assert [s["step"] for s in result.steps] == ["dense", "prune_1", "loaded"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["prune_1"]
    assert any("replacing the earlier runs" in m and "centroids, prune_1, prune_2" in m
               for m in messages)


def test_pipeline_reassigns_weights_while_the_centroids_train(tmp_path, tiny_data):
    """``reassign_weights``: the centroid run trains the kept weights too (straight-through),
    some change cluster, and the file still holds exactly the model the pipeline scored."""
    cfg = CompressConfig(
        prune=PruneConfig(sparsity=0.6), retrain_epochs=0,
        sharing=WeightSharingConfig(bits={"conv": 4, "classifier": 5}, entropy_weight=0.02),
        centroid_epochs=1, centroid_lr=0.01, reassign_weights=True, train=TRAIN)
    messages = []
    result = compress(tiny_model(), cfg, tmp_path / "m.sqz", data=tiny_data,
                      work_dir=tmp_path / "runs", log=messages.append)
    steps = {s["step"]: s for s in result.steps}
    assert steps["centroids"]["reassign_weights"] is True
    kept = sum(int(m.weight_mask.sum()) for m in shared_modules(result.model).values())
    assert 0 < steps["centroids"]["moved_weights"] < kept
    assert any("kept weights" in m and "another cluster" in m for m in messages)
    # no latent weights left behind; pruned weights still zero; the file is the model
    assert not any("latent" in n for n, _ in result.model.named_parameters())
    assert steps["centroids"]["sparsity"] == pytest.approx(steps["share"]["sparsity"])
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(result.loaded(x), result.model.eval()(x))
    assert steps["loaded"]["top1"] == steps["centroids"]["top1"]
    assert result.summary["config"]["reassign_weights"] is True
    with pytest.raises(ValueError, match="reassign_weights must be true or false, got 'yes'"):
        CompressConfig(reassign_weights="yes")


def test_pipeline_distills_every_fine_tuning_run_from_the_dense_model(tmp_path, tiny_data,
                                                                     monkeypatch):
    """``distill:`` adds one DistillHook to the retraining and centroid runs, its teacher a
    frozen copy of the model as it was before pruning (not the pruned one being trained)."""
    from squeezelab.train import distill

    teachers = []
    loss = distill.DistillHook.loss

    def spy(self, state, images, labels, logits, step_loss):
        teachers.append(self.teacher)
        return loss(self, state, images, labels, logits, step_loss)

    monkeypatch.setattr(distill.DistillHook, "loss", spy)
    cfg = CompressConfig.from_dict({
        "prune": {"sparsity": 0.6}, "retrain_epochs": 1, "retrain_lr": 2e-3,
        "sharing": {"bits": {"conv": 4, "classifier": 5}}, "centroid_epochs": 1,
        "distill": {"T": 2, "alpha": 0.5}, "train": TRAIN})
    source, messages = tiny_model(), []
    result = compress(source, cfg, tmp_path / "m.sqz", data=tiny_data,
                      work_dir=tmp_path / "runs", log=messages.append)
    assert len(teachers) == 2 * len(tiny_data[0]) // TRAIN["batch_size"]  # every step, 2 runs
    teacher = teachers[0]
    assert all(t is teacher for t in teachers) and not teacher.training
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in source.state_dict().items())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert any("distilling from the dense model in every fine-tuning run (kd, T=2, alpha=0.5)"
               in m for m in messages)
    want = {"teacher": "dense", "temperature": 2, "alpha": 0.5, "mode": "kd"}
    assert read_sqz(result.path).meta["compress_config"]["distill"] == want
    # without fine-tuning runs there is nothing to distil into: no teacher is made
    teachers.clear()
    cfg = CompressConfig.from_dict({"prune": {"sparsity": 0.5}, "retrain_epochs": 0,
                                    "sharing": None, "distill": {}, "train": TRAIN})
    messages.clear()
    compress(source, cfg, tmp_path / "n.sqz", data=tiny_data, log=messages.append)
    assert not teachers and not any("distilling" in m for m in messages)


def test_pipeline_prunes_gradually_in_one_run(tmp_path, tiny_data):
    """prune_schedule "gradual": the 2 x 1 epochs of two rounds as one run whose sparsity
    rises along the cubic curve (4 steps an epoch here: an update a step, 5 updates over the
    first 2/3 of the 8 steps), ending on each layer's target; the model as loaded has it."""
    cfg = CompressConfig(prune=PruneConfig(sparsity=0.6, rules={"classifier": 0.3}),
                         prune_rounds=2, retrain_epochs=1, retrain_lr=2e-3,
                         prune_schedule="gradual", sharing=None, train=TRAIN)
    messages = []
    result = compress(tiny_model(), cfg, tmp_path / "g.sqz", data=tiny_data,
                      work_dir=tmp_path / "runs", log=messages.append)
    assert [s["step"] for s in result.steps] == ["dense", "prune_gradual", "loaded"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["prune_gradual"]
    epochs = [json.loads(line) for line in
              (tmp_path / "runs" / "prune_gradual" / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 2 and 0.5 < epochs[0]["sparsity"] < epochs[1]["sparsity"]
    step = result.steps[1]
    assert step["retrain_epochs"] == 2 and step["top1"] == result.steps[-1]["top1"]
    layers = Masks.from_model(load_compressed(tmp_path / "g.sqz")).layer_sparsity()
    assert layers["classifier.1.weight"] == pytest.approx(0.3, abs=0.01)
    assert layers["features.0.weight"] == pytest.approx(0.6, abs=0.01)
    assert any("gradual pruning over 2 epoch(s)" in m for m in messages)
    with pytest.raises(ValueError, match="prune_schedule must be one of .*gradual"):
        CompressConfig(prune_schedule="cubic")
    with pytest.raises(ValueError, match="needs training data and retrain_epochs >= 1"):
        compress(tiny_model(), CompressConfig(prune_schedule="gradual", retrain_epochs=0,
                                              sharing=None, train=TRAIN),
                 tmp_path / "h.sqz", data=tiny_data, work_dir=tmp_path / "runs2")


def test_pipeline_folds_batchnorm_before_sharing(tmp_path, tiny_data):
    cfg = CompressConfig(
        prune=PruneConfig(sparsity=0.5), retrain_epochs=1, retrain_lr=2e-3,
        sharing=WeightSharingConfig(bits={"conv": 4, "classifier": 5}), centroid_epochs=1,
        centroid_lr=1e-3, fold_batchnorm=True, train=TRAIN)
    plain_cfg = CompressConfig.from_dict({**cfg.to_dict(), "fold_batchnorm": False})
    plain = compress(tiny_model(), plain_cfg, tmp_path / "plain.sqz", data=tiny_data,
                     work_dir=tmp_path / "r1", log=lambda m: None)
    result = compress(tiny_model(), cfg, tmp_path / "folded.sqz", data=tiny_data,
                      work_dir=tmp_path / "r2", log=lambda m: None)
    steps = {s["step"]: s for s in result.steps}
    assert list(steps) == ["dense", "prune_1", "fold_bn", "share", "centroids", "loaded"]
    # folding is exact up to float rounding: same accuracy, same sparsity
    assert steps["fold_bn"]["top1"] == pytest.approx(steps["prune_1"]["top1"], abs=0.02)
    assert steps["fold_bn"]["sparsity"] == pytest.approx(steps["prune_1"]["sparsity"])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in result.loaded.modules())
    assert steps["loaded"]["top1"] == steps["centroids"]["top1"]
    assert (tmp_path / "folded.sqz").stat().st_size < (tmp_path / "plain.sqz").stat().st_size
    # the unfolded run keeps BatchNorm: in the model it loads back and as tensors in its file
    assert [s["step"] for s in plain.steps] == ["dense", "prune_1", "share", "centroids",
                                                "loaded"]
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.loaded.modules())
    plain_names = {e["name"] for e in read_sqz(plain.path).entries}
    folded_names = {e["name"] for e in read_sqz(result.path).entries}
    assert any(n.endswith("running_var") for n in plain_names)
    assert not any(n.endswith("running_var") for n in folded_names)
    # each file computes what its in-memory model computes, so scores what it scored
    x = torch.randn(4, 3, 32, 32)
    for run in (plain, result):
        with torch.no_grad():
            assert torch.equal(run.loaded(x), run.model.eval()(x))
        assert run.steps[-1]["top1"] == run.steps[-2]["top1"]
    # the header records every setting, the fold among them
    assert read_sqz(plain.path).meta["compress_config"] == plain_cfg.to_dict()
    assert read_sqz(result.path).meta["compress_config"] == cfg.to_dict()
    assert read_sqz(result.path).meta["compress_config"]["fold_batchnorm"] is True


def test_pipeline_stores_half_precision_floats_and_scores_them(tmp_path, tiny_data):
    """float_dtype rounds the stored floats before the last evaluation: the file then scores
    exactly what the pipeline reports, in fewer bytes than the float32 file of the same model."""
    cfg = CompressConfig(prune=PruneConfig(sparsity=0.5), retrain_epochs=0,
                         sharing=WeightSharingConfig(bits={"conv": 4, "classifier": 5}),
                         centroid_epochs=0, float_dtype="float16", train=TRAIN)
    full_cfg = CompressConfig.from_dict({**cfg.to_dict(), "float_dtype": "float32"})
    half = compress(tiny_model(), cfg, tmp_path / "half.sqz", data=tiny_data,
                    log=lambda m: None)
    full = compress(tiny_model(), full_cfg, tmp_path / "full.sqz", data=tiny_data,
                    log=lambda m: None)
    assert [s["step"] for s in half.steps] == ["dense", "prune_1", "share", "float16_floats",
                                               "loaded"]
    assert half.steps[-1]["top1"] == half.steps[-2]["top1"]
    assert half.steps[-2]["top1"] == pytest.approx(full.steps[-1]["top1"], abs=0.02)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(half.loaded(x), half.model.eval()(x))
    assert half.size["file_bytes"] < full.size["file_bytes"]
    assert read_sqz(half.path).meta["compress_config"]["float_dtype"] == "float16"
    with pytest.raises(ValueError, match="float_dtype must be one of"):
        CompressConfig(float_dtype="fp16")
    with pytest.raises(ValueError, match=r"coder must be one of \('auto', 'smallest', "
                                         r"'huffman', 'ans', 'adaptive'\), got 'zstd'"):
        CompressConfig(coder="zstd")
    huffman_cfg = CompressConfig.from_dict({**cfg.to_dict(), "coder": "huffman"})
    huffman = compress(tiny_model(), huffman_cfg, tmp_path / "huffman.sqz", data=tiny_data,
                       log=lambda m: None)
    assert not any("coder" in e for e in read_sqz(huffman.path).entries)
    assert huffman.steps[-1]["top1"] == half.steps[-1]["top1"]  # the coder is lossless
    # 8-bit levels for the biases as well: one rounding step, scored, and the file loads as
    # scored (on a model this small, levels pay only for the larger tensors)
    levels_cfg = CompressConfig.from_dict({**cfg.to_dict(), "dense_bits": 8})
    levels = compress(tiny_model(), levels_cfg, tmp_path / "levels.sqz", data=tiny_data,
                      log=lambda m: None)
    assert [s["step"] for s in levels.steps][-2:] == ["float16_floats+dense_8bit", "loaded"]
    assert levels.steps[-1]["top1"] == levels.steps[-2]["top1"]
    with torch.no_grad():
        assert torch.equal(levels.loaded(x), levels.model.eval()(x))
    assert {e["encoding"] for e in read_sqz(levels.path).entries} >= {"uniform", "shared"}
    with pytest.raises(ValueError, match="dense_bits must be in 1..16 or None, got 17"):
        CompressConfig(dense_bits=17)


def test_prune_only_checkpoint_round_trip(tmp_path, tiny_data):
    model = tiny_model()
    cfg = CompressConfig(prune=PruneConfig(sparsity=0.5), retrain_epochs=0, sharing=None,
                         centroid_epochs=0, train=TRAIN)
    result = compress(model, cfg, tmp_path / "p.sqz", data=tiny_data, log=lambda m: None)
    assert [s["step"] for s in result.steps] == ["dense", "prune_1", "loaded"]
    assert result.steps[1]["masked_sparsity"] == pytest.approx(0.5, abs=1e-3)
    # no retraining: magnitude pruning at 50% of every prunable weight
    assert result.steps[-1]["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_load_compressible_shared_and_masked(tmp_path):
    model = tiny_model()
    masks = Masks({"features.0.weight": model.features[0].weight.detach().abs() > 0.05})
    masks.apply_(model)
    masks["classifier.1.weight"] = torch.ones_like(model.classifier[1].weight, dtype=torch.bool)
    share_weights_(model, WeightSharingConfig(bits={"classifier": 3, "squeeze": 2}))
    path = save_compressible(tmp_path / "shared", model, masks=masks)
    back = load_compressible(path)
    assert shared_layer_bits(back.model) == shared_layer_bits(model)
    assert shared_layer_bits(model)["classifier.1.weight"] == 3
    # the unshared layer's mask comes back; the shared one's lives in its weight_mask
    assert list(back.masks) == ["features.0.weight"]
    assert torch.equal(back.masks["features.0.weight"], masks["features.0.weight"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back.model(x), model.eval()(x))
    meta = json.loads(path.read_text())
    meta["shared_layers"] = {"features.99.weight": 3}
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shared layers do not fit"):
        load_compressible(path)


def test_quantize_dispatch():
    model = tiny_model()
    report = quantize_(model, WeightSharingConfig(bits={"conv": 2}))
    assert report["features.0.weight"]["num_clusters"] == 4
    assert quantize_(tiny_model(), LowRankConfig(energy=None, rank=1, layers=("classifier.*",)))
    r = quantize_(tiny_model(), UniformQuantConfig(activation_num_bits=None))
    assert all(v["size_bytes"] < v["fp32_bytes"] for v in r.values())
    assert quantize_(tiny_model(), FixedPointConfig(total_bits=8))
    with pytest.raises(TypeError, match="config must be one of .*got PruneConfig"):
        quantize_(tiny_model(), PruneConfig(sparsity=0.5))


@pytest.mark.parametrize("recipe", sorted(
    p.name for p in (Path(__file__).resolve().parents[2] / "recipes").glob("compress_*.yaml")))
def test_recipes_load_and_fit_their_model(recipe):
    from squeezelab.compress.quantization.weight_sharing import select_layers
    from squeezelab.train import TrainConfig

    path = Path(__file__).resolve().parents[2] / "recipes" / recipe
    cfg = CompressConfig.from_yaml(path)
    train_cfg = TrainConfig.from_yaml(path)  # the dense run ignores the compress: section
    model = create_model(train_cfg.model, num_classes=10)
    targets = cfg.prune.layer_targets(model)  # raises if a rule names no layer
    assert len(targets) == len(select_layers(model, cfg.sharing)) > 10
    assert cfg.to_dict()["train"]["batch_size"] == 128
