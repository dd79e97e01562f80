"""Post-training quantization as a workflow: any registered quantizer
(``compress/quantization/registry.py``) applied to a checkpoint, scored before and after under
one :class:`~squeezelab.train.evaluate.EvalProtocol`, and written as a model file that loads
back: a ``.sqz`` for k-means weight sharing, else a checkpoint whose meta records the
quantizer (``compress/format/quantized.py``), which ``load_model`` and ``squeezelab eval`` read.

    result = quantize_model("runs/base", "q8", config, "int8", test=test)
    result.before, result.after, result.path

``squeezelab quantize`` parses its flags into the quantizer's config, calls this and prints.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeezelab.checkpoint import source_meta
from squeezelab.compress.format.checkpoints import (
    Compressible,
    load_compressible,
    save_compressible,
)
from squeezelab.compress.format.quantized import QUANTIZER_KEY, quantizer_record
from squeezelab.compress.format.size_report import format_size_report, size_report
from squeezelab.compress.format.sqz import save_compressed
from squeezelab.compress.quantization.registry import quantize_
from squeezelab.data.preprocess import Preprocess
from squeezelab.train.console import print_line
from squeezelab.train.evaluate import EvalProtocol
from squeezelab.workflows.deep_compression import evaluate_top1

#: quantizers that calibrate activation ranges on images
CALIBRATED = ("int8",)


@dataclass
class QuantizeResult:
    """What ``quantize_model`` returns: the file written, top-1 ``before`` / ``after`` (None
    without test images) and the ``record`` (method, config, protocol, per-layer report,
    size_bytes / fp32_bytes where the quantizer counts them, the .sqz ``size`` totals)."""

    path: Path
    before: float | None
    after: float | None
    record: dict[str, Any]


def report_bytes(report: Any) -> tuple[float | None, float | None]:
    """(quantized bytes, fp32 bytes) summed over a quantizer's per-layer report, if it counts
    them (``size_bytes``/``fp32_bytes`` or ``size_bits``/``fp32_bits`` per layer)."""
    if not isinstance(report, dict):
        return None, None
    layers = report.get("layers", report) if isinstance(report.get("layers"), dict) else report
    q = f = 0.0
    found = False
    for row in layers.values():
        if not isinstance(row, dict):
            continue
        if "size_bytes" in row and "fp32_bytes" in row:
            q, f, found = q + row["size_bytes"], f + row["fp32_bytes"], True
        elif "size_bits" in row and "fp32_bits" in row:
            q, f, found = q + row["size_bits"] / 8, f + row["fp32_bits"] / 8, True
    return (q, f) if found else (None, None)


def _calibration_batches(test, batches: int) -> list:
    from squeezelab.data import BatchLoader

    loader = BatchLoader(test, 64, train=False, augment=None)
    loader.set_epoch(0)
    return [b for _, b in zip(range(batches), loader)]


def check_output(output: str | Path, method: str) -> Path:
    """``output`` as a path, checked to be what ``method`` writes: a ``.sqz`` file holds a
    k-means weight-shared model only (the CLI checks it before loading anything)."""
    out = Path(output)
    if out.suffix == ".sqz" and method != "kmeans":
        raise ValueError(f"a .sqz file holds a k-means weight-shared model; method {method} "
                         f"writes a checkpoint: give the output a stem or a .json name, got "
                         f"{out}")
    return out


def quantize_model(
    source: str | os.PathLike | Compressible,
    output: str | os.PathLike,
    config: Any,
    method: str,
    *,
    test=None,
    protocol: EvalProtocol | None = None,
    calibration_batches: int = 8,
    log: Callable[[str], None] = print_line,
) -> QuantizeResult:
    """Quantize the checkpoint ``source`` with the registered quantizer ``method`` and its
    ``config``, score it on ``test`` before and after (None: not measured; int8 needs it, to
    calibrate on ``calibration_batches`` batches of 64), and write ``output``: a ``.sqz``
    (``method`` "kmeans" only) or a checkpoint. ``protocol``: how top-1 is scored (default: as
    the source was trained, fp32)."""
    out = check_output(output, method)
    sqz = out.suffix == ".sqz"
    if method in CALIBRATED and test is None:
        raise ValueError(f"{method} calibrates its activation ranges on images: give test "
                         "images")
    src = source if isinstance(source, Compressible) else load_compressible(source)
    protocol = protocol or EvalProtocol.for_model(src.meta)
    before = after = None
    if test is not None:
        before = evaluate_top1(src.model, test, protocol)["top1"]
        log(f"before: top-1 {before:.4f} ({protocol.describe()}, {len(test)} test images)")
    calibration = (_calibration_batches(test, calibration_batches) if method in CALIBRATED
                   else [])
    log(f"quantizing with {type(config).__name__}: {config.to_dict()}")
    report = quantize_(src.model, config, calibration)
    src.model.eval()
    if test is not None:
        after = evaluate_top1(src.model, test, protocol)["top1"]
    record: dict[str, Any] = {"checkpoint": None if isinstance(source, Compressible)
                              else str(source), "method": method, "config": config.to_dict(),
                              "top1_before": before, "top1_after": after,
                              "protocol": protocol.to_dict(), "layers": report}
    q_bytes, f_bytes = report_bytes(report)
    if q_bytes is not None:
        record["size_bytes"], record["fp32_bytes"] = q_bytes, f_bytes
    # how inputs are prepared: the source's record (older files: the images scored here)
    meta = source_meta(src.meta)
    if "mean" not in meta and test is not None:
        meta.update(Preprocess.from_data(test).to_meta())
    if sqz:
        save_compressed(src.model, out, class_names=src.meta.get("class_names"),
                        meta={**meta, "quantize": record})
        rep = size_report(out)
        log(format_size_report(rep))
        record["size"] = dict(rep.totals)
        path = out
    else:
        meta[QUANTIZER_KEY] = quantizer_record(config, report, method)
        meta["quantize"] = {k: v for k, v in record.items() if k != "layers"}
        path = save_compressible(out, src.model, meta=meta)
    return QuantizeResult(path=path, before=before, after=after, record=record)


__all__ = ["CALIBRATED", "QuantizeResult", "check_output", "quantize_model", "report_bytes"]
