"""Running a model file on image files: the record a trained checkpoint carries, predictions
that agree image by image with ``evaluate`` on the same split, and ``squeezelab predict``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_configs import TINY

from squeezelab.checkpoint import checkpoint_paths
from squeezelab.cli import main
from squeezelab.data import BatchLoader
from squeezelab.data.preprocess import Preprocess, image_files
from squeezelab.inference import load_model, predict, preprocess_of, trained_image_size
from squeezelab.models import create_model
from squeezelab.train import TrainConfig, train
from squeezelab.train.evaluate import evaluate


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar_tree, cifar_small):
    """A tiny SqueezeNet trained 2 epochs on 500 images of the class-folder tree."""
    train_data, test_data = cifar_small
    data = train_data.subset(torch.arange(0, 1000, 2)), test_data
    cfg = TrainConfig(model="squeezenet_cifar", model_args=TINY, data=str(cifar_tree), epochs=2,
                      batch_size=50, optimizer="adamw", lr=0.01, precision="fp32",
                      channels_last=False, progress=False,
                      out_dir=str(tmp_path_factory.mktemp("runs")), run_name="run")
    return train(cfg, data=data).run_dir


def test_a_trained_checkpoint_records_how_its_inputs_were_prepared(run, cifar_small):
    model, meta = load_model(run)
    assert not model.training
    assert preprocess_of(meta) == Preprocess.from_data(cifar_small[0])
    assert meta["image_size"] == [32, 32]


def test_predictions_agree_with_evaluate_on_the_same_split(run, cifar_tree, cifar_small):
    """The test split's JPEG files, prepared from the record alone, score exactly the top-1
    that ``evaluate`` gives on the decoded split: the same pixels, the same normalisation."""
    model, meta = load_model(run)
    test = cifar_small[1]
    loader = BatchLoader(test, 100, train=False, augment=None)
    loader.set_epoch(0)
    expected = evaluate(model, loader, test.num_classes)["top1"]
    files = image_files([cifar_tree / "test"])
    images, _ = preprocess_of(meta).load_images(files)
    top = predict(model, images, top_k=3)
    truth = torch.tensor([meta["class_names"].index(Path(f).parent.name) for f in files])
    assert (top.indices[:, 0] == truth).double().mean().item() == expected
    assert expected > 0.15  # above chance (10%): the model did learn from real images
    # probabilities: a softmax, best first
    assert torch.all(top.probabilities[:, :-1] >= top.probabilities[:, 1:])
    assert torch.all(top.probabilities.sum(dim=1) <= 1 + 1e-6)
    flipped = predict(model, images, top_k=1, test_time_flip=True)
    loader.set_epoch(0)
    assert (flipped.indices[:, 0] == truth).double().mean().item() == evaluate(
        model, loader, test.num_classes, test_time_flip=True)["top1"]


def test_predict_labels_and_bad_arguments():
    model = create_model("squeezenet_cifar", num_classes=3, **TINY)
    top = predict(model, torch.randn(2, 3, 32, 32), top_k=5)  # more than there are classes
    assert top.indices.shape == (2, 3)
    rows = top.labels(["cat", "dog", "frog"])
    assert sorted(name for name, _ in rows[0]) == ["cat", "dog", "frog"]
    assert top.labels(None)[0][0][0].startswith("class ")
    with pytest.raises(ValueError, match="top_k must be a positive int, got 0"):
        predict(model, torch.randn(1, 3, 32, 32), top_k=0)
    with pytest.raises(ValueError, match=r"images must be a float \(N, 3, H, W\) tensor"):
        predict(model, torch.zeros(3, 32, 32, dtype=torch.uint8))


def test_older_files_fall_back_to_the_config_size_then_the_native_size():
    assert trained_image_size({"image_size": [24, 32], "config": {"image_size": 64}}) == (24, 32)
    assert trained_image_size({"config": {"image_size": 64}}) == 64
    assert trained_image_size({"config": {}, "model": {"name": "squeezenet_cifar"}}) == 32
    assert trained_image_size({"model": {"name": "squeezenet1_1"}}) == 224


def _strip_record(run: Path, tmp_path: Path, keep_config: bool = True) -> Path:
    """A copy of the run's checkpoint as written before the record existed."""
    json_path, tensors_path = checkpoint_paths(run / "checkpoints" / "best")
    meta = json.loads(json_path.read_text())
    for key in ("image_size", "mean", "std") + (() if keep_config else ("config",)):
        del meta[key]
    out = tmp_path / "old"
    Path(str(out) + ".json").write_text(json.dumps(meta))
    Path(str(out) + ".safetensors").write_bytes(tensors_path.read_bytes())
    return out


def test_cli_predict_prints_classes_and_writes_json(run, cifar_tree, tmp_path, capsys):
    cat = sorted((cifar_tree / "test" / "cat").iterdir())[:2]
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    out = tmp_path / "p.json"
    assert main(["predict", str(run), *map(str, cat), str(notes), "--top-k", "2",
                 "--skip-bad-images", "true", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"skipped {notes}: not a readable image" in text
    assert "on 2 images (resized to 32x32, normalised as in training)" in text
    result = json.loads(out.read_text())
    assert [p["image"] for p in result["predictions"]] == [str(c) for c in cat]
    assert all(len(p["top"]) == 2 for p in result["predictions"])
    model, meta = load_model(run)
    images, _ = preprocess_of(meta).load_images(cat)
    top = predict(model, images, top_k=2).labels(meta["class_names"])
    assert [[(t["class"], t["probability"]) for t in p["top"]]
            for p in result["predictions"]] == top
    for line, row in zip(text.splitlines()[-2:], top):
        assert row[0][0] in line

    # an unreadable file stops the run unless skipped, naming it
    assert main(["predict", str(run), str(notes)]) == 2
    assert "cannot decode image" in capsys.readouterr().err

    # a checkpoint written before the record: the mean/std of the data its config names
    old = _strip_record(run, tmp_path)
    assert main(["predict", str(old), *map(str, cat), "--top-k", "2", "--json",
                 str(tmp_path / "old.json")]) == 0
    assert "does not record its input normalisation" in capsys.readouterr().out
    old_result = json.loads((tmp_path / "old.json").read_text())
    assert old_result["predictions"] == result["predictions"]


def test_cli_predict_bad_input(run, tmp_path, capsys):
    assert main(["predict", str(run), str(tmp_path / "missing.png")]) == 2
    assert "missing.png does not exist" in capsys.readouterr().err
    bare = _strip_record(run, tmp_path, keep_config=False)
    image = tmp_path / "x.png"
    image.write_bytes(b"")  # never read: the missing record is found first
    assert main(["predict", str(bare), str(image)]) == 2
    assert "pass --data SOURCE" in capsys.readouterr().err


def test_an_exported_onnx_file_predicts_and_evaluates_on_its_own(run, cifar_tree, tmp_path,
                                                                 capsys):
    """The ONNX file carries the record and class names: with onnxruntime it classifies
    photos and scores a split like the checkpoint it came from."""
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(run), "--onnx", str(onnx_path)]) == 0
    ort_model, meta = load_model(onnx_path)
    torch_model, torch_meta = load_model(run)
    assert preprocess_of(meta) == preprocess_of(torch_meta)
    assert meta["class_names"] == torch_meta["class_names"]
    files = image_files([cifar_tree / "test" / "cat"])[:20]
    images, _ = preprocess_of(meta).load_images(files)
    got, expected = predict(ort_model, images), predict(torch_model, images)
    assert torch.equal(got.indices[:, 0], expected.indices[:, 0])
    assert torch.allclose(got.probabilities, expected.probabilities, atol=1e-4)
    capsys.readouterr()
    for model_path, name in ((onnx_path, "onnx"), (run, "ckpt")):
        assert main(["eval", str(model_path), "--data", str(cifar_tree),
                     "--json", str(tmp_path / f"{name}.json")]) == 0
    scores = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("onnx", "ckpt")}
    assert scores["onnx"]["count"] == scores["ckpt"]["count"] == 300
    assert abs(scores["onnx"]["top1"] - scores["ckpt"]["top1"]) <= 1 / 300  # a near-tie at most
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["predict", str(bad), str(files[0])]) == 2
    assert "is not a readable ONNX model" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["int8", "binary", "xnor", "fixed", "pq", "rq", "lowrank",
                                    "kmeans"])
def test_load_model_rebuilds_a_quantized_checkpoint(tmp_path, method):
    """A checkpoint that records its quantizer loads back (a fresh model, the quantizer's
    transform, then the saved state) into a model that computes what the quantized one did."""
    from squeezelab.compress.format.checkpoints import save_compressible
    from squeezelab.compress.format.quantized import quantizer_record
    from squeezelab.compress.quantization.registry import (
        QUANTIZERS,
        QuantizeOptions,
        quantize_,
        quantizer_config,
    )

    assert method in QUANTIZERS  # every registered method is listed above
    torch.manual_seed(0)
    model = create_model("squeezenet_cifar", num_classes=10, **TINY).eval()
    x = torch.randn(8, 3, 32, 32)
    config = quantizer_config(method, QuantizeOptions(num_clusters=16, energy=0.6))
    report = quantize_(model, config, [x[:4]])
    save_compressible(tmp_path / "q", model, meta={
        "quantizer": quantizer_record(config, report, method), "image_size": [32, 32]})
    loaded, meta = load_model(tmp_path / "q")
    assert meta["quantizer"]["config"] == config.to_dict()
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max().item() <= 1e-6
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]


def test_a_quantized_checkpoint_with_a_bad_record_is_a_clear_error(tmp_path):
    from squeezelab.checkpoint import CheckpointError, save_checkpoint

    model = create_model("squeezenet_cifar", num_classes=10, **TINY)
    save_checkpoint(tmp_path / "q", model, meta={"quantizer": {"config_type": "Ternary"}})
    with pytest.raises(CheckpointError, match="meta 'quantizer' must name one of"):
        load_model(tmp_path / "q")
