"""Int8 inference from a model and stored activation ranges (squeezelab/int8.py): the ranges
round-trip through JSON, the int8 model built from them alone agrees with the float model,
a .sqz file carries them, and stale or malformed ranges are refused."""
import json

import pytest
import torch
from sqz_helpers import TINY, tiny_shared_model

from squeezelab import create_model
from squeezelab.compress.format.sqz import save_compressed
from squeezelab.inference import OnnxModel, load_model
from squeezelab.int8 import FORMAT, calibrate, check_calibration, quantized_onnx


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("squeezenet_cifar", **TINY).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(96, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def calibration(model, images):
    return json.loads(json.dumps(calibrate(model, images)))  # as a .sqz header returns it


def test_calibration_records_every_activation_range(calibration, images):
    assert calibration["format"] == FORMAT and calibration["images"] == 96
    assert calibration["input_size"] == [3, 32, 32]
    ranges = calibration["ranges"]
    low, high = ranges["input"]
    assert low == pytest.approx(float(images.min())) and high == pytest.approx(float(images.max()))
    # one per convolution output at least (TINY: stem + 8 Fires x 3 + classifier)
    assert sum("Conv" in name for name in ranges) >= 26
    assert all(lo <= hi for lo, hi in ranges.values())


def test_int8_model_from_ranges_alone_agrees_with_the_float_model(model, calibration, images):
    int8 = OnnxModel(quantized_onnx(model, calibration), threads=1)
    x = images[:48]
    with torch.no_grad():
        ref, out = model(x), int8(x)
    assert out.shape == ref.shape == (48, 10)
    error = (out - ref).abs().max() / ref.abs().max()
    assert 0 < error < 0.05  # quantized (not the float graph), and close to it
    agree = (out.argmax(1) == ref.argmax(1)).float().mean()
    assert agree >= 0.95


def test_stale_or_malformed_calibrations_are_refused(model, calibration):
    stale = json.loads(json.dumps(calibration))
    stale["ranges"]["/features/features.99/Conv_output_0"] = [0.0, 1.0]
    with pytest.raises(ValueError, match=r"names 1 tensors this export does not have .* "
                                         r"calibrate again"):
        quantized_onnx(model, stale)
    for bad, match in ((None, "not an int8 calibration"),
                       ({**calibration, "input_size": [3, 32]}, "input_size must be"),
                       ({**calibration, "ranges": {"input": [2.0, 1.0]}}, "finite \\[low, high\\]"),
                       ({**calibration, "ranges": {"input": [0, float("nan")]}}, "finite")):
        with pytest.raises(ValueError, match=match):
            check_calibration(bad)
    with pytest.raises(ValueError, match="non-empty float"):
        calibrate(model, torch.zeros(0, 3, 32, 32))


def test_a_sqz_file_carries_its_calibration(tmp_path, images):
    shared = tiny_shared_model()
    cal = calibrate(shared, images[:32])
    path = save_compressed(shared, tmp_path / "m.sqz", meta={"int8": cal})
    model, meta = load_model(path, int8=True)
    assert isinstance(model, OnnxModel) and meta["int8"]["images"] == 32
    with torch.no_grad():
        ref = shared(images[:16])
        assert (model(images[:16]).argmax(1) == ref.argmax(1)).float().mean() >= 0.8
    plain = save_compressed(shared, tmp_path / "plain.sqz")
    with pytest.raises(ValueError, match="carries no int8 calibration: compress it with "
                                         "--int8-calibration"):
        load_model(plain, int8=True)
    with pytest.raises(ValueError, match="int8 runs a .sqz file"):
        load_model(tmp_path / "model.onnx", int8=True)
