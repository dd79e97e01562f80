"""ONNX export of any squeezelab model, a checkpoint or a ``.sqz`` file, checked against
onnxruntime.

Weight-shared layers compute their weight in a forward pre-hook; the exporter is given a dense
copy instead (``materialize_``), whose weights are bit-identical, so the ONNX graph holds
ordinary Conv/Gemm nodes and the original model is not changed.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from squeezelab.extras import import_extra
from squeezelab.models import unwrap_model

#: what writing an ONNX file needs (the TorchScript exporter builds its graph with onnx), and
#: what checking it needs; the torch.export based exporter needs onnxscript too
EXPORT_MODULES = ("onnx",)
CHECK_MODULES = ("onnxruntime",)
DYNAMO_MODULES = ("onnxscript",)


def _dense_copy(model: nn.Module) -> nn.Module:
    from squeezelab.compress.quantization.weight_sharing import (
        materialize_,
        shared_modules,
    )

    model = unwrap_model(model)
    if shared_modules(model):
        model = copy.deepcopy(model)
        materialize_(model)
    return model


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: tuple[int, int, int] = (3, 32, 32),
    opset: int = 18,
    dynamo: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model`` (eval mode, batch dimension dynamic) to ``path`` as ONNX.

    ``input_size``: (channels, height, width) of one image. ``dynamo=False`` uses the
    TorchScript exporter (needs only ``onnx``); ``dynamo=True`` the torch.export based one (needs
    ``onnxscript``). Input ``"input"``, output ``"logits"``. ``metadata``: string key/value
    pairs stored in the file's ``metadata_props`` (``onnx_metadata`` builds squeezelab's:
    class names and the preprocessing record, so an app can prepare its inputs).
    """
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str)
                                        for k, v in metadata.items()):
        raise ValueError("metadata must map strings to strings (ONNX metadata_props)")
    if len(input_size) != 3 or not all(isinstance(v, int) and v > 0 for v in input_size):
        raise ValueError(f"input_size must be (channels, height, width) positive ints, got "
                         f"{input_size!r}")
    if not isinstance(opset, int) or not 7 <= opset <= 23:
        raise ValueError(f"opset must be an int in 7..23, got {opset!r}")
    # before torch.onnx starts: without them it fails deep inside with OnnxExporterError
    for module in EXPORT_MODULES + (DYNAMO_MODULES if dynamo else ()):
        import_extra(module, "ONNX export")
    net = _dense_copy(model)
    was_training = net.training
    net.eval()
    example = torch.zeros(2, *input_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if dynamo:
            torch.onnx.export(net, (example,), str(path), dynamo=True, opset_version=opset,
                              input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
        else:
            # the TorchScript exporter is deprecated but needs no onnxscript and is ~5x faster
            # here; its deprecation warnings say nothing about this export
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(net, (example,), str(path), dynamo=False,
                                  opset_version=opset, input_names=["input"],
                                  output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    finally:
        net.train(was_training)
    if metadata:
        onnx = import_extra("onnx", "ONNX export")
        proto = onnx.load(str(path))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(path))
    return path


def onnx_metadata(meta: Mapping[str, Any]) -> dict[str, str]:
    """squeezelab's ONNX metadata for a model file's ``meta`` (``squeezelab.inference.load_model``):
    ``squeezelab.model`` (registry spec), ``squeezelab.class_names``,
    ``squeezelab.preprocess`` (image_size, mean, std: how to prepare an input) and
    ``squeezelab.config`` (the training data and test-time flip, so that ``eval`` and
    ``compare`` score the ONNX file on the same images and the same way as its source), each
    as JSON; the ones the meta lacks are left out."""
    from squeezelab.model_meta import preprocess_of

    out = {}
    if meta.get("model"):
        out["squeezelab.model"] = json.dumps(meta["model"])
    if meta.get("class_names"):
        out["squeezelab.class_names"] = json.dumps(list(meta["class_names"]))
    pre = preprocess_of(meta)
    if pre is not None:
        out["squeezelab.preprocess"] = json.dumps(pre.to_meta())
    config = {k: v for k, v in (meta.get("config") or {}).items()
              if k in ONNX_CONFIG_KEYS and v is not None}
    if config:
        out["squeezelab.config"] = json.dumps(config)
    return out


#: The training settings an ONNX file keeps: what scoring it needs to match its source.
ONNX_CONFIG_KEYS = ("data", "test_time_flip")


def check_onnx(model: nn.Module, path: str | os.PathLike, inputs: torch.Tensor) -> float:
    """Max absolute difference between ``model(inputs)`` and onnxruntime on ``path``."""
    ort = import_extra("onnxruntime", "checking an ONNX file against onnxruntime")

    net = _dense_copy(model)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        expected = net(inputs).float().numpy()
    net.train(was_training)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: inputs.float().numpy()})[0]
    if got.shape != expected.shape:
        raise ValueError(f"{path}: onnxruntime output shape {got.shape}, model {expected.shape}")
    return float(np.abs(got - expected).max())


__all__ = ["CHECK_MODULES", "DYNAMO_MODULES", "EXPORT_MODULES", "check_onnx", "export_onnx",
           "onnx_metadata"]
