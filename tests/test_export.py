"""ONNX export of a plain model, a weight-shared model and a .sqz file, checked against
onnxruntime, with squeezelab's metadata stored in the file."""
import json

import pytest
import torch

from squeezelab.compress import (
    WeightSharingConfig,
    load_compressed,
    prune_,
    save_compressed,
    share_weights_,
)
from squeezelab.export import check_onnx, export_onnx, onnx_metadata
from squeezelab.models import create_model

TINY = {"fire_config": [[4, 8, 8]] * 8, "stem_channels": 16}


def tiny():
    torch.manual_seed(0)
    return create_model("squeezenet_cifar", num_classes=10, **TINY).eval()


def test_plain_model_matches_onnxruntime(tmp_path):
    model = tiny()
    path = export_onnx(model, tmp_path / "m.onnx", (3, 32, 32))
    # the batch dimension is dynamic: a batch of 5 runs though the export used 2
    assert check_onnx(model, path, torch.randn(5, 3, 32, 32)) < 1e-4


def test_sqz_matches_onnxruntime_and_shared_model_is_unchanged(tmp_path):
    model = tiny()
    prune_(model, 0.5)
    share_weights_(model, WeightSharingConfig(bits={"conv": 3, "classifier": 4}))
    save_compressed(model, tmp_path / "m.sqz")
    loaded = load_compressed(tmp_path / "m.sqz")
    path = export_onnx(loaded, tmp_path / "sqz.onnx", (3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    assert check_onnx(loaded, path, x) < 1e-4
    # exporting the shared model itself goes through a dense copy: the model stays shared
    path2 = export_onnx(model, tmp_path / "shared.onnx", (3, 32, 32))
    assert hasattr(model.features[0], "codebook")
    assert check_onnx(model, path2, x) < 1e-4


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"input_size must be \(channels, height, width\)"):
        export_onnx(tiny(), "x.onnx", (32, 32))
    with pytest.raises(ValueError, match="opset must be an int in 7..23, got 3"):
        export_onnx(tiny(), "x.onnx", (3, 32, 32), opset=3)
    with pytest.raises(ValueError, match="metadata must map strings to strings"):
        export_onnx(tiny(), "x.onnx", (3, 32, 32), metadata={"classes": ["cat"]})


def test_metadata_is_stored_and_the_model_still_matches(tmp_path):
    import onnx

    model = tiny()
    meta = {"model": {"name": "squeezenet_cifar", "kwargs": {"num_classes": 10}},
            "class_names": [f"c{i}" for i in range(10)],
            "image_size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
            "config": {"data": "/data/cifar10", "test_time_flip": True, "lr": 0.1}}
    props = onnx_metadata(meta)
    # the training data and flip travel (eval scores the file like its source); the rest not
    assert json.loads(props["squeezelab.config"]) == {"data": "/data/cifar10",
                                                      "test_time_flip": True}
    assert json.loads(props["squeezelab.preprocess"]) == {
        "image_size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    assert "squeezelab.preprocess" not in onnx_metadata({"model": meta["model"]})
    path = export_onnx(model, tmp_path / "m.onnx", (3, 32, 32), metadata=props)
    stored = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert stored == props
    assert check_onnx(model, path, torch.randn(2, 3, 32, 32)) < 1e-4
    from squeezelab.inference import load_model

    _, loaded = load_model(path)
    assert loaded["config"] == {"data": "/data/cifar10", "test_time_flip": True}
    assert loaded["class_names"] == meta["class_names"] and loaded["image_size"] == [32, 32]
