"""Run a model file on images: load any checkpoint, run directory, ``.sqz`` or exported
``.onnx`` file, read how its inputs were prepared in training
(:class:`~squeezelab.data.preprocess.Preprocess`), and return each image's most likely classes.

    model, meta = load_model("model.sqz")
    images, paths = preprocess_of(meta).load_images(["cat.jpg"])
    top = predict(model, images, top_k=3)
    top.labels(meta["class_names"])        # [[("cat", 0.91), ("dog", 0.05), ("deer", 0.01)]]
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from squeezelab.data.preprocess import Preprocess  # noqa: F401  (predict's callers use it)
from squeezelab.model_meta import preprocess_of, trained_image_size  # noqa: F401  (re-exported)

# Images per forward pass: bounds memory when a folder of thousands is classified.
PREDICT_BATCH = 256


class OnnxModel(nn.Module):
    """An ONNX model (a file, or the bytes of one) run by onnxruntime (CPU) behind the
    ``nn.Module`` interface that ``predict`` and ``evaluate`` use: fp32 (N, C, H, W) in, logits
    out. ``threads``: onnxruntime's intra-op threads (default: its own choice)."""

    def __init__(self, source: str | os.PathLike | bytes, threads: int | None = None):
        super().__init__()
        from squeezelab.extras import import_extra

        what = "an ONNX model" if isinstance(source, bytes) else str(source)
        ort = import_extra("onnxruntime", f"running {what}")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                source if isinstance(source, bytes) else str(source), options,
                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a damaged file
            raise ValueError(f"{what} is not a readable ONNX model: {e}") from None
        self.input_name = self.session.get_inputs()[0].name
        #: bytes of the ONNX model (what would ship as a file)
        self.size_bytes = len(source) if isinstance(source, bytes) else Path(source).stat().st_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.detach().float().contiguous().cpu().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: batch})[0])

    def metadata(self) -> dict[str, Any]:
        """The meta ``export`` wrote into the file (``export.onnx_metadata``), as load_model
        returns it; files from elsewhere give what they have (possibly nothing)."""
        props = self.session.get_modelmeta().custom_metadata_map
        meta: dict[str, Any] = {}
        for key, field in (("squeezelab.model", "model"),
                           ("squeezelab.class_names", "class_names")):
            if key in props:
                meta[field] = json.loads(props[key])
        if "squeezelab.preprocess" in props:
            meta.update(json.loads(props["squeezelab.preprocess"]))
        if "squeezelab.config" in props:
            meta["config"] = json.loads(props["squeezelab.config"])
        return meta


def load_model(path: str | os.PathLike, *, int8: bool = False,
               average: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, meta) from a checkpoint, a run directory, a ``.sqz`` file or an
    ``.onnx`` file (run by onnxruntime). Checkpoints of masked, weight-shared or quantized
    models (``squeezelab prune / quantize -o``) are rebuilt by ``load_compressible``.
    ``int8``: a ``.sqz`` file that carries an int8 calibration (``compress
    --int8-calibration``) runs as int8 through onnxruntime (``squeezelab.int8``).
    ``average``: a training checkpoint's moving average of the weights instead of its weights
    (a run's ``last`` keeps both; its ``best`` and final model are the average already).

    The meta holds the model spec (``model``), ``class_names``, the training ``config`` and the
    preprocessing record, whichever kind of file it came from (as far as it records them).
    """
    p = Path(path)
    if int8 and p.suffix != ".sqz":
        raise ValueError(f"{p}: int8 runs a .sqz file that carries an int8 calibration "
                         "(squeezelab compress ... --int8-calibration 512)")
    if average and p.suffix in (".onnx", ".sqz"):
        raise ValueError(f"{p}: only a training checkpoint keeps a weight average beside its "
                         f"weights; a {p.suffix} file holds one set of weights")
    if p.suffix == ".onnx":
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist")
        model = OnnxModel(p).eval()
        return model, model.metadata()
    if p.suffix == ".sqz":
        from squeezelab.compress.format.sqz import load_compressed

        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist")
        model = load_compressed(p)
        # the header carries the spec and class names; its meta holds the compression record
        header = model.sqz_header
        meta = header.get("meta", {})
        # "config" (the data the model was fine-tuned on) comes from the compression record
        train_cfg = (meta.get("compress_config") or {}).get("train") or {}
        if int8:
            if "int8" not in meta:
                raise ValueError(f"{p} carries no int8 calibration: compress it with "
                                 "--int8-calibration 512 (squeezelab compress)")
            from squeezelab.int8 import quantized_onnx

            model = OnnxModel(quantized_onnx(model, meta["int8"])).eval()
        return model, {**meta, "config": meta.get("config") or train_cfg,
                       "model": header["model"], "class_names": header.get("class_names")}
    from squeezelab.checkpoint import resolve_checkpoint
    from squeezelab.compress.format.checkpoints import load_compressible

    # load_compressible also rebuilds weight-shared checkpoints (plain ones load as before)
    loaded = load_compressible(resolve_checkpoint(p), average=average)
    loaded.model.eval()
    return loaded.model, loaded.meta


@dataclass
class Predictions:
    """``probabilities`` and ``indices``: (N, k) float32 / int64, best class first."""

    probabilities: torch.Tensor
    indices: torch.Tensor

    def labels(self, class_names: Sequence[str] | None) -> list[list[tuple[str, float]]]:
        """Per image, [(class name, probability), ...]; unnamed classes as "class 7"."""
        rows = []
        for probs, idx in zip(self.probabilities.tolist(), self.indices.tolist()):
            rows.append([(class_names[i] if class_names else f"class {i}", p)
                         for i, p in zip(idx, probs)])
        return rows


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, top_k: int = 5,
            test_time_flip: bool = False) -> Predictions:
    """The ``top_k`` classes of each normalised image (N, 3, H, W) and their softmax
    probabilities, in fp32. ``test_time_flip`` averages the logits with the mirrored image's,
    as ``evaluate`` does (the same ranking)."""
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float (N, 3, H, W) tensor, got "
                         f"{images.dtype} of shape {tuple(images.shape)}")
    was_training = model.training
    model.eval()
    probs, indices = [], []
    try:
        for start in range(0, len(images), PREDICT_BATCH):
            batch = images[start:start + PREDICT_BATCH]
            logits = model(batch).float()
            if test_time_flip:
                logits = (logits + model(batch.flip(3)).float()) / 2
            k = min(top_k, logits.shape[1])
            top = logits.softmax(dim=1).topk(k, dim=1)
            probs.append(top.values)
            indices.append(top.indices)
    finally:
        model.train(was_training)
    return Predictions(torch.cat(probs), torch.cat(indices))


__all__ = ["OnnxModel", "PREDICT_BATCH", "Predictions", "load_model", "predict",
           "preprocess_of", "trained_image_size"]
