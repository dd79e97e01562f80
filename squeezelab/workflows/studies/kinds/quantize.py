"""The ``quantize`` cell: one quantizer of the registry (``compress/quantization/registry.py``)
applied to the model ``source`` names, optionally followed by fine-tuning where the method
trains: int8 as quantization-aware training (Jacob et al. 2018, arXiv 1712.05877: fake
quantization while training, then the integer model), k-means sharing with centroid
fine-tuning (Deep Compression, arXiv 1510.00149; through the ``compress`` workflow with pruning
off, so it writes a Huffman-coded ``.sqz``), BinaryConnect / XNOR and fixed point on their
real-valued shadow weights (BinaryConnect's weight clipping on), and the low-rank factors.
Product and residual quantization write their reconstruction into the weights, so they take no
fine-tuning.

Recipe values: ``source``, ``method`` (a registered quantizer name), ``config`` (that
quantizer's config fields over what the ``quantize`` command builds by default: ``{bits: 4}``
for k-means, ``{total_bits: 6}`` for fixed point ...), ``fine_tune_epochs`` / ``fine_tune_lr``
and ``train`` (TrainConfig fields of the fine-tuning run, over the source's own),
``calibration_batches`` (int8 post-training: training images run through the model to set the
activation ranges), ``test_time_flip``. Fine-tuning runs in fp32 unless ``train`` says otherwise
(under bf16 autocast a fake quantizer would round its own scales).

The record: top-1/top-5 of the written file as loaded back, the source's under the same
protocol, **bits per weight** (the stored bits of every conv/linear weight, with what the
method stores per layer or channel to decode them, over the number of weights; layers the
method leaves alone count 32: fp32 32, int8 8 plus its scales, k-means log2(k) plus the
codebook, binary 1 plus XNOR's scales, fixed point its total bits, product/residual their codes
and codebooks, low rank 32 times the factors' share of the weights), and the bytes on disk of
the file written (a checkpoint ``model.safetensors`` + ``model.json`` that ``load_model``
reads back; k-means: ``model.sqz``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from squeezelab.checkpoint import checkpoint_paths, source_meta
from squeezelab.compress.format.checkpoints import load_compressible, save_compressible
from squeezelab.compress.format.quantized import QUANTIZER_KEY, quantizer_record
from squeezelab.compress.quantization import (
    BinaryClipHook,
    BinaryConfig,
    FixedPointConfig,
    LowRankConfig,
    ProductQuantConfig,
    ResidualQuantConfig,
    UniformQuantConfig,
    convert_qat_,
    prepare_qat_,
)
from squeezelab.compress.quantization.registry import QuantizeOptions, get_quantizer, quantize_
from squeezelab.compress.quantization.weight_sharing import WeightSharingConfig
from squeezelab.config import ConfigBase, ConfigError
from squeezelab.data import BatchLoader
from squeezelab.metrics import count_parameters
from squeezelab.models import model_spec
from squeezelab.models.layer_roles import prunable_parameters
from squeezelab.train.loop import TrainingDiverged, train
from squeezelab.workflows.deep_compression import CompressConfig, compress
from squeezelab.workflows.studies.model_cells import (
    MODEL_STEM,
    check_finished,
    check_reproduces,
    check_source,
    check_train_section,
    continue_section,
    data_for,
    file_size,
    fresh_or_resume,
    load_source,
    place_seed,
    protocol_for,
    score,
    source_checkpoint,
    source_score,
    train_config,
)
from squeezelab.workflows.studies.registry import CellContext, register_cell_kind

#: config classes whose model trains after the transform (the rest write fixed weights)
FINE_TUNABLE = (UniformQuantConfig, WeightSharingConfig, BinaryConfig, FixedPointConfig,
                LowRankConfig)
#: TrainConfig fields the cell sets for its fine-tuning run
FIXED_TRAIN_FIELDS = ("epochs", "lr", "model", "model_args", "init_from", "seed", "out_dir",
                      "run_name")


def _quantizer_config(method: str, values: dict[str, Any]) -> ConfigBase:
    """The config of ``method``: what its registration builds by default, with ``values``
    over it (unknown keys and bad values named)."""
    q = get_quantizer(method, "method")
    base = q.build(QuantizeOptions()).to_dict()
    return q.config_class.from_dict({**base, **values}, source=f"method {method} config")


@dataclass
class QuantizeCellSettings(ConfigBase):
    """A ``quantize`` cell (see the module docstring); ``seed`` is placed by the study."""

    source: str
    method: str
    config: dict[str, Any] = field(default_factory=dict)
    fine_tune_epochs: int = 0
    fine_tune_lr: float = 0.001
    train: dict[str, Any] = field(default_factory=dict)
    calibration_batches: int = 4
    test_time_flip: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_source(self.source)
        if not isinstance(self.config, dict):
            raise ConfigError(f"config must be a mapping of the {self.method} quantizer's "
                              f"fields, got {type(self.config).__name__}")
        quantizer = self.quantizer_config()
        for name, low in (("fine_tune_epochs", 0), ("calibration_batches", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(self.fine_tune_lr, bool) or not isinstance(self.fine_tune_lr,
                                                                  (int, float)) \
                or not self.fine_tune_lr > 0:
            raise ConfigError(f"fine_tune_lr must be a number > 0, got {self.fine_tune_lr!r}")
        if self.fine_tune_epochs and not isinstance(quantizer, FINE_TUNABLE):
            raise ConfigError(
                f"method {self.method} cannot be fine-tuned: it writes its reconstruction into "
                "the weights, and training would move them off its codebooks; set "
                "fine_tune_epochs: 0 (methods that train: "
                f"{', '.join(_fine_tunable_methods())})")
        self.train = check_train_section(self.train, "quantize", FIXED_TRAIN_FIELDS)
        if self.test_time_flip is not None and not isinstance(self.test_time_flip, bool):
            raise ConfigError(f"test_time_flip must be true, false or null, got "
                              f"{self.test_time_flip!r}")

    def quantizer_config(self) -> ConfigBase:
        return _quantizer_config(self.method, self.config)


def _fine_tunable_methods() -> list[str]:
    from squeezelab.compress.quantization.registry import QUANTIZERS

    return [q.name for q in QUANTIZERS.values() if issubclass(q.config_class, FINE_TUNABLE)]


# --- bits per weight ---------------------------------------------------------------------------
def weight_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Module name -> (weights, bias entries) of every Conv2d/Linear weight of ``model``."""
    out = {}
    for p in prunable_parameters(model).values():
        module = model.get_submodule(p.module_name)
        bias = getattr(module, "bias", None)
        out[p.module_name] = (module.weight.numel(), 0 if bias is None else bias.numel())
    return out


def stored_weight_bits(config: ConfigBase, report: dict[str, Any],
                       layers: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Module name -> the bits a quantized layer stores for its weight: the codes and what the
    method keeps per layer or channel to decode them (scales, codebooks, fractional lengths);
    biases are not weights and are left out. ``report``: what the transform returned;
    ``layers``: ``weight_layers`` of the model before it."""
    if isinstance(config, WeightSharingConfig):  # keyed by weight name
        return {name.removesuffix(".weight"): r["num_weights"] * r["bits"]
                + 32 * r["num_clusters"] for name, r in report.items()}
    if isinstance(config, UniformQuantConfig):  # size_bytes counts the bias at 32 bits
        return {name: 8 * r["size_bytes"] - 32 * layers[name][1] for name, r in report.items()}
    if isinstance(config, BinaryConfig):
        return {name: r["size_bits"] - 32 * layers[name][1] for name, r in report.items()}
    if isinstance(config, FixedPointConfig):  # + one fractional length per layer (a byte)
        return {name: r["total_bits"] * layers[name][0] + 8 for name, r in report.items()}
    if isinstance(config, (ProductQuantConfig, ResidualQuantConfig)):
        return {name: r["code_bits"] + r["codebook_bits"]
                for name, r in report["layers"].items()}
    if isinstance(config, LowRankConfig):  # the two factors' weights, at 32 bits
        return {name: 32 * (r["params_after"] - layers[name][1]) for name, r in report.items()
                if r.get("skipped") is None}
    raise TypeError(f"no bit count for quantizer config {type(config).__name__}")


def bits_per_weight(config: ConfigBase, report: dict[str, Any],
                    layers: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """The effective bits per conv/linear weight of a quantized model (layers left alone at
    32), with the counts it comes from and the ratio to fp32."""
    quantized = stored_weight_bits(config, report, layers)
    unknown = sorted(set(quantized) - set(layers))
    if unknown:
        raise ValueError(f"the quantizer reports layers {unknown[:3]} that are not conv/linear "
                         "weights of the source model")
    weights = sum(n for n, _ in layers.values())
    bits = sum(quantized.values()) + sum(32 * layers[m][0] for m in layers
                                         if m not in quantized)
    return {"bits_per_weight": bits / weights, "weight_bits": bits, "num_weights": weights,
            "quantized_layers": len(quantized), "layers": len(layers),
            "ratio_fp32_weights": 32 * weights / bits}


# --- the cell ------------------------------------------------------------------------------------
def _finish(model: nn.Module) -> nn.Module:
    # train() may have chosen channels_last: score and save in the default layout
    model.to(memory_format=torch.contiguous_format)
    return model.eval()


def _calibration(data, batches: int) -> list:
    """The first ``batches`` batches of training images, in order: int8's activation ranges
    come from images the model was trained on, not from the test images it is scored on."""
    loader = BatchLoader(data, 64, train=False, augment=None)
    loader.set_epoch(0)
    return [b for _, b in zip(range(batches), loader)]


@register_cell_kind("quantize", settings=QuantizeCellSettings, prepare=place_seed,
                    failures=(TrainingDiverged,))
def run_quantize_cell(settings: QuantizeCellSettings, ctx: CellContext) -> dict[str, Any]:
    """Quantize (and fine-tune) the source, write the model into the run folder, score the
    file as loaded back and return the cell's record."""
    checkpoint = source_checkpoint(settings.source)
    src = load_source(settings.source)
    config = settings.quantizer_config()
    epochs = settings.fine_tune_epochs
    # fp32 unless told: fake quantization under bf16 autocast would round its scales too
    section = continue_section(src.meta, {"precision": "fp32", **settings.train},
                               settings.seed)
    cfg = train_config({**section, "epochs": max(1, epochs), "lr": settings.fine_tune_lr,
                        "model": model_spec(src.model)["name"]}, ctx, f"cell {ctx.name}")
    data = data_for(cfg, ctx)
    protocol = protocol_for(src.meta, settings.test_time_flip)
    model = src.model
    layers = weight_layers(model)
    parameters = count_parameters(model)
    log = print if ctx.progress else (lambda *_: None)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    tune_dir = ctx.run_dir / "fine_tune"
    fresh_or_resume(tune_dir, resumable=False)  # an earlier, unrecorded attempt's run
    if isinstance(config, WeightSharingConfig):
        # the compress workflow with pruning off: share, fine-tune the centroids, .sqz
        pipeline = CompressConfig(prune=None, sharing=config, centroid_epochs=epochs,
                                  centroid_lr=settings.fine_tune_lr,
                                  train={**section, "progress": ctx.progress})
        result = compress(checkpoint, pipeline, ctx.run_dir / f"{MODEL_STEM}.sqz",
                          data=tuple(data), work_dir=ctx.run_dir, protocol=protocol, log=log)
        check_finished(*(Path(s["run_dir"]) for s in result.steps if s.get("run_dir")),
                       cell=ctx.name)
        before, after = result.steps[0], result.steps[-1]
        report = result.summary["sharing"]
        path, file_bytes, json_bytes = result.path, result.size["file_bytes"], 0
    else:
        before = source_score(checkpoint, model, data.test, protocol, ctx)
        if isinstance(config, UniformQuantConfig) and epochs:
            prepare_qat_(model, config)  # fake quantization while training, then integers
            train(cfg, model=model, data=data, run_dir=tune_dir)
            check_finished(tune_dir, cell=ctx.name)
            report = convert_qat_(_finish(model))
        else:
            calibration = (_calibration(data.train, settings.calibration_batches)
                           if get_quantizer(settings.method).calibrated else [])
            report = quantize_(model, config, calibration)
            if epochs:
                hooks = [BinaryClipHook()] if isinstance(config, BinaryConfig) \
                    and config.clip_weights else []
                train(cfg, hooks=hooks, model=model, data=data, run_dir=tune_dir)
                check_finished(tune_dir, cell=ctx.name)
        _finish(model)
        meta = source_meta(src.meta)
        meta[QUANTIZER_KEY] = quantizer_record(config, report, settings.method)
        meta["quantize"] = {"source": str(checkpoint), "method": settings.method,
                            "config": config.to_dict(), "fine_tune_epochs": epochs,
                            "top1_before": before["top1"], "protocol": protocol.to_dict()}
        path = save_compressible(ctx.run_dir / MODEL_STEM, model, meta=meta)
        loaded = load_compressible(path).model
        check_reproduces(model, loaded, data.test, protocol, path)
        after = score(loaded, data.test, protocol)
        json_path, st_path = checkpoint_paths(path)
        file_bytes, json_bytes = file_size(st_path), file_size(json_path)
    bits = bits_per_weight(config, report, layers)
    source_bytes = checkpoint_paths(checkpoint)[1].stat().st_size
    return {
        "metrics": {
            "test_top1": after["top1"],  # the written file as loaded back
            "test_top5": after["top5"],
            "source_top1": before["top1"],
            "source_top5": before["top5"],
            "top1_change": after["top1"] - before["top1"],
            "bits_per_weight": bits["bits_per_weight"],
            "fine_tune_epochs": epochs,
            "test_protocol": protocol.to_dict(),
        },
        "compression": {
            **bits,
            "file_bytes": file_bytes,
            "file_mb": file_bytes / 1e6,  # the papers' MB
            "json_bytes": json_bytes,
            # the source's fp32 safetensors file, and how many times smaller the file is
            "source_file_bytes": source_bytes,
            "ratio_source_file": source_bytes / file_bytes,
            # everything in the file (biases, BatchNorm, headers) over the parameters
            "file_bits_per_parameter": 8 * file_bytes / parameters,
        },
        "quantizer": {"method": settings.method, "config_type": type(config).__name__,
                      "config": config.to_dict()},
        "layers": report,
        "parameters": parameters,
        "fp32_bytes": 4 * parameters,
        "file_bytes": file_bytes,
        "file": str(path),
        "source": {"path": str(checkpoint), "top1": before["top1"],
                   "protocol": protocol.to_dict()},
        "fine_tune_dir": str(tune_dir) if epochs and tune_dir.exists() else None,
        "test_images": len(data.test),
        "run_dir": str(ctx.run_dir),
    }


__all__ = ["QuantizeCellSettings", "bits_per_weight", "run_quantize_cell",
           "stored_weight_bits", "weight_layers"]
