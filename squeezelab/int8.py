"""Int8 inference from a compressed model file alone, through ONNX Runtime's quantized
operators: weights int8 per output channel, activations uint8, in the QDQ form ONNX Runtime
fuses into integer convolutions.

Static int8 quantization needs the range of every activation, which takes images to measure.
``calibrate`` measures them once (ONNX Runtime's min-max calibrator on the model's ONNX
export), at compression time, and the ranges go into the ``.sqz`` header (``meta["int8"]``:
under a KB compressed, no side file). ``quantized_onnx`` then builds the int8 model from the
model and those ranges, with no images: export to ONNX, quantize with every activation's range
given (``TensorQuantOverrides``), return the ONNX bytes (``inference.OnnxModel`` runs them). A
weight-shared layer's weights become int8 like any other (its 16-64 distinct values land on the
int8 grid of their channel).

The ranges are keyed by the ONNX exporter's tensor names, which follow the model's module
names; ``quantized_onnx`` refuses a calibration whose names its own export does not have (a
file calibrated by another exporter) rather than quantize with made-up ranges.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from squeezelab.extras import import_extra

FORMAT = "onnxruntime-qdq-minmax"
_BATCH = 64


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime's quantizer logs advice through the root logger ("consider running
    pre-processing"): not this module's user's concern."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _ort_quantization(purpose: str):
    import_extra("onnxruntime", purpose)
    import onnxruntime.quantization  # (part of onnxruntime)
    import onnxruntime.quantization.calibrate

    return onnxruntime.quantization


def _reader(arrays: list[np.ndarray]):
    quantization = _ort_quantization("int8 quantization")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(arrays)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"input": batch}

    return Reader()


def _export(model: nn.Module, directory: Path, input_size: tuple[int, int, int]) -> Path:
    from squeezelab.export import export_onnx

    return export_onnx(model, directory / "fp32.onnx", input_size=input_size)


def _input_size(images: torch.Tensor) -> tuple[int, int, int]:
    if images.dim() != 4 or images.shape[0] == 0 or not images.is_floating_point():
        raise ValueError(f"calibration images must be a non-empty float (N, C, H, W) tensor of "
                         f"normalised images, got {tuple(images.shape)} {images.dtype}")
    return tuple(int(v) for v in images.shape[1:])  # type: ignore[return-value]


def calibrate(model: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """The activation ranges of ``model`` (a registry model, possibly weight-shared) on
    ``images`` (normalised as the model expects), as JSON-ready data for ``quantized_onnx``:
    ``{"format", "input_size", "images", "torch", "ranges": {tensor: [low, high]}}``."""
    calibrate_mod = _ort_quantization("int8 calibration").calibrate
    input_size = _input_size(images)
    arrays = [images[i:i + _BATCH].detach().float().cpu().numpy()
              for i in range(0, images.shape[0], _BATCH)]
    with tempfile.TemporaryDirectory() as tmp, _quiet_quantizer():
        fp32 = _export(model, Path(tmp), input_size)
        calibrator = calibrate_mod.create_calibrator(
            str(fp32), [], augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=calibrate_mod.CalibrationMethod.MinMax,
            providers=["CPUExecutionProvider"])
        calibrator.collect_data(_reader(arrays))
        data = calibrator.compute_data().data
    ranges = {}
    for name, value in data.items():
        # 6 significant digits: the header keeps them as JSON text (this moves a scale by
        # under 1e-5 of itself; a uint8 level is 1/255 of the range)
        low, high = (float(f"{float(np.asarray(v).reshape(-1)[0]):.6g}")
                     for v in value.range_value)
        ranges[name] = [low, high]
    return {"format": FORMAT, "input_size": list(input_size), "images": int(images.shape[0]),
            "torch": torch.__version__.split("+")[0], "ranges": ranges}


def calibration_images(train, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` images of the ImageTensors ``train`` (a fixed random choice), normalised as a
    model trained on it sees them: what ``calibrate`` measures ranges on."""
    from squeezelab.data.preprocess import Preprocess

    pick = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(seed))
    return Preprocess.from_data(train).normalize(train.images[pick[:count]])


def check_calibration(calibration: Any, source: str = "the calibration") -> dict[str, Any]:
    """``calibration`` if it is what ``calibrate`` returns, else ValueError saying what is off."""
    if not isinstance(calibration, dict) or calibration.get("format") != FORMAT:
        raise ValueError(f"{source} is not an int8 calibration of format {FORMAT!r}")
    size = calibration.get("input_size")
    ranges = calibration.get("ranges")
    if (not isinstance(size, list) or len(size) != 3
            or not all(isinstance(v, int) and v > 0 for v in size)):
        raise ValueError(f"{source}: input_size must be [channels, height, width], got {size!r}")
    if not isinstance(ranges, dict) or not ranges or not all(
            isinstance(v, list) and len(v) == 2
            and all(isinstance(x, (int, float)) and np.isfinite(x) for x in v)
            and v[0] <= v[1] for v in ranges.values()):
        raise ValueError(f"{source}: ranges must map tensor names to finite [low, high] pairs")
    return calibration


def quantized_onnx(model: nn.Module, calibration: dict[str, Any]) -> bytes:
    """The int8 version of ``model`` as ONNX bytes (QDQ; ``inference.OnnxModel(bytes)`` runs it:
    fp32 images in, logits out), from ``calibrate``'s ranges and no images."""
    onnx = import_extra("onnx", "int8 quantization")
    quantization = _ort_quantization("int8 quantization")
    calibration = check_calibration(calibration)
    size = tuple(calibration["input_size"])
    with tempfile.TemporaryDirectory() as tmp, _quiet_quantizer():
        fp32 = _export(model, Path(tmp), size)  # type: ignore[arg-type]
        graph = onnx.load(str(fp32)).graph
        names = {v for node in graph.node for v in node.output} | {i.name for i in graph.input}
        unknown = sorted(set(calibration["ranges"]) - names)
        if unknown:
            raise ValueError(
                f"the int8 calibration names {len(unknown)} tensors this export does not have "
                f"(e.g. {unknown[0]!r}): it was made with torch {calibration.get('torch')}, "
                f"this is torch {torch.__version__}; calibrate again")
        overrides = {name: [{"rmin": np.float32(low), "rmax": np.float32(high)}]
                     for name, (low, high) in calibration["ranges"].items()}
        int8 = Path(tmp) / "int8.onnx"
        # every activation's range is given; the one all-zero image only lets the quantizer
        # run its calibration pass, whose ranges the overrides replace
        quantization.quantize_static(
            str(fp32), str(int8), _reader([np.zeros((1, *size), np.float32)]),
            quant_format=quantization.QuantFormat.QDQ, per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            nodes_to_exclude=[], extra_options={"TensorQuantOverrides": overrides})
        return int8.read_bytes()


__all__ = ["FORMAT", "calibrate", "calibration_images", "check_calibration", "quantized_onnx"]
