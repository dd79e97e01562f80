"""The Deep Compression pipeline end to end (Han et al. 2015, "Deep Compression: Compressing Deep
Neural Networks with Pruning, Trained Quantization and Huffman Coding", arXiv 1510.00149):

    dense model -> magnitude pruning in rounds, each followed by retraining under a MaskHook
    (arXiv 1506.02626) -> k-means weight sharing of the kept weights -> centroid fine-tuning
    -> Huffman-coded .sqz file -> the file loaded back and evaluated -> size report.

Every retraining phase is an ordinary ``train()`` run with its own run directory and metrics;
every step's settings, epochs, accuracy, sparsity and size are recorded in a JSON summary next
to the .sqz (``<name>.summary.json``) and in the file's own ``meta``.

It is a workflow: it combines training (``squeezelab.train``) with the compression transforms
(``squeezelab.compress``), which never import each other. Checkpoints of masked or
weight-shared models go through ``compress/format/checkpoints.py``; its settings are
``compress_config.py``'s ``CompressConfig``.
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from squeezelab.checkpoint import resolve_checkpoint
from squeezelab.compress.fold import fold_batchnorm
from squeezelab.compress.format.checkpoints import (
    Compressible,
    load_compressible,
    refresh_shared,
    save_compressible,
)
from squeezelab.compress.format.size_report import size_report
from squeezelab.compress.format.sqz import (
    load_compressed,
    round_stored_floats_,
    save_compressed,
)
from squeezelab.compress.pruning.magnitude import prune_
from squeezelab.compress.pruning.masks import MaskHook, Masks
from squeezelab.compress.pruning.schedules import EpochGradualPruneHook, iterative_sparsities
from squeezelab.compress.quantization.reassign import (
    enable_reassignment_,
    freeze_assignments_,
)
from squeezelab.compress.quantization.weight_sharing import (
    select_layers,
    share_weights_,
    shared_modules,
)
from squeezelab.fileio import atomic_write_bytes, json_default
from squeezelab.hooks import TrainHook
from squeezelab.models import model_spec, unwrap_model
from squeezelab.train.console import print_line
from squeezelab.train.evaluate import EvalProtocol, evaluate_data
from squeezelab.workflows.compress_config import (  # noqa: F401  (re-exported)
    CompressConfig,
    compress_config_for,
)
from squeezelab.workflows.fine_tuning import (  # noqa: F401  (re-exported)
    INHERITED_TRAIN_FIELDS,
    FineTuningDistillConfig,
    default_work_dir,
    distillation_hooks,
    fine_tune_train_section,
)


@dataclass
class CompressResult:
    """What ``compress`` returns."""

    path: Path  # the .sqz file
    summary_path: Path  # its JSON summary
    model: nn.Module  # the in-memory weight-shared model the file was written from
    loaded: nn.Module  # the model load_compressed rebuilt from the file
    steps: list[dict[str, Any]]
    size: dict[str, Any]  # size_report totals
    summary: dict[str, Any]


# --------------------------------------------------------------------------------------------
# evaluation and bookkeeping
# --------------------------------------------------------------------------------------------
def evaluate_top1(model: nn.Module, data, protocol: EvalProtocol | None = None,
                  batch_size: int = 256) -> dict[str, Any]:
    """Top-1/top-5 (fractions) and loss of ``model`` on ImageTensors ``data`` on CPU, scored
    under ``protocol`` (default fp32, no flip), which the result records beside them."""
    r = evaluate_data(model, data, protocol or EvalProtocol(), batch_size)
    return {"top1": r["top1"], "top5": r["top5"], "loss": r["loss"], "protocol": r["protocol"]}


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries over every Conv2d/Linear weight (shared ones included)."""
    total = zeros = 0
    for _, m in unwrap_model(model).named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            total += w.numel()
            zeros += int((w == 0).sum())
    return zeros / total if total else 0.0


def _rounding_step(config: CompressConfig) -> str:
    """The pipeline step that rounds the stored floats: "float16_floats", "dense_8bit", or
    "float16_floats+dense_8bit"."""
    parts = [f"{config.float_dtype}_floats"] if config.float_dtype != "float32" else []
    if config.dense_bits is not None:
        parts.append(f"dense_{config.dense_bits}bit")
    return "+".join(parts)


def _record(steps: list, step: str, model: nn.Module, data, log: Callable[[str], None],
            protocol: EvalProtocol | None = None, **extra: Any) -> dict[str, Any]:
    rec = {"step": step, **extra}
    if "sparsity" not in rec:  # (an int8 ONNX Runtime model has no torch weights to count)
        # outside a forward, a shared layer's .weight holds its last dense weight: refresh it
        # so sparsity counts what the model computes with
        refresh_shared(model)
        rec["sparsity"] = weight_sparsity(model)
    protocol = protocol or EvalProtocol()
    if data is not None:
        rec.update(evaluate_top1(model, data[1], protocol))
    steps.append(rec)
    acc = f"  top-1 {rec['top1']:.4f} ({protocol.describe()})" if "top1" in rec else ""
    log(f"[{step}] sparsity {rec['sparsity']:.3f}{acc}")
    return rec


def _load_data(config: CompressConfig):
    from squeezelab.train.data import load_run_data

    return tuple(load_run_data(config.train_config("data")))


def _finish_training(model: nn.Module) -> None:
    # train() may have chosen channels_last; give the model back in the default layout so the
    # in-memory and loaded models run the same kernels
    model.to(memory_format=torch.contiguous_format)
    model.eval()


# --------------------------------------------------------------------------------------------
# the steps
# --------------------------------------------------------------------------------------------
def prune_and_retrain(
    model: nn.Module, config: CompressConfig, data, work_dir: str | os.PathLike, *,
    masks: Masks | None = None, log: Callable[[str], None] = print_line,
    protocol: EvalProtocol | None = None, hooks: Sequence[TrainHook] = (),
) -> tuple[Masks, list[dict[str, Any]]]:
    """Prune ``model`` in place to ``config.prune`` in ``config.prune_rounds`` rounds, each
    followed by ``config.retrain_epochs`` of training under a MaskHook and ``hooks`` (a run
    directory ``work_dir/prune_<r>``). Returns the final masks and one step record per round,
    each scored on ``data[1]`` under ``protocol`` (default fp32, no flip) when data is given."""
    if config.prune is None:
        raise ValueError("prune_and_retrain needs config.prune (a PruneConfig), got None")
    if config.prune_schedule == "gradual":
        return _prune_gradually(model, config, data, work_dir, masks=masks, log=log,
                                protocol=protocol, hooks=hooks)
    steps: list[dict[str, Any]] = []
    n = config.prune_rounds
    for r in range(n):
        round_cfg = config.prune.map_sparsity(
            lambda s, r=r: iterative_sparsities(s, n, config.prune_schedule)[r])
        masks = prune_(model, round_cfg, keep=masks)
        log(f"prune round {r + 1}/{n}: masks at sparsity {masks.sparsity():.3f}"
            + (f", retraining {config.retrain_epochs} epoch(s)" if config.retrain_epochs else ""))
        run_dir = None
        if config.retrain_epochs and data is not None:
            run_dir = Path(work_dir) / f"prune_{r + 1}"
            cfg = config.train_config(f"prune_{r + 1}", config.retrain_epochs,
                                      config.retrain_lr, model=model_spec(model)["name"])
            from squeezelab.train.loop import train

            train(cfg, hooks=[MaskHook(masks), *hooks], model=model, data=data,
                  run_dir=run_dir)
            _finish_training(model)
        _record(steps, f"prune_{r + 1}", model, data, log, protocol, round=r + 1,
                target=round_cfg.to_dict(), masked_sparsity=masks.sparsity(),
                retrain_epochs=config.retrain_epochs if run_dir else 0,
                run_dir=str(run_dir) if run_dir else None)
    return masks, steps


#: the share of a gradual run over which the sparsity rises (the rest trains at the final one)
GRADUAL_RAMP = 2 / 3
#: mask updates per epoch of a gradual run's ramp
GRADUAL_UPDATES_PER_EPOCH = 4


def _prune_gradually(
    model: nn.Module, config: CompressConfig, data, work_dir: str | os.PathLike, *,
    masks: Masks | None, log: Callable[[str], None], protocol: EvalProtocol | None,
    hooks: Sequence[TrainHook],
) -> tuple[Masks, list[dict[str, Any]]]:
    """``prune_schedule: gradual`` (Zhu & Gupta 2017, arXiv 1710.01878): the training the
    iterative schedule would spend (``prune_rounds`` x ``retrain_epochs`` epochs) as one run
    (``work_dir/prune_gradual``), whose sparsity rises along the cubic curve from the source's
    to each layer's target over the first ``GRADUAL_RAMP`` of it, a few mask updates an epoch;
    the rest of the run, its learning rate annealing, recovers at the final sparsity."""
    epochs = config.prune_rounds * config.retrain_epochs
    if data is None or not epochs:
        raise ValueError("prune_schedule 'gradual' prunes while it trains: it needs training "
                         "data and retrain_epochs >= 1")
    if config.prune.method != "magnitude":
        raise ValueError("prune_schedule 'gradual' raises a sparsity; it does not go with the "
                         f"{config.prune.method!r} method (quality): give a sparsity")
    hook = EpochGradualPruneHook(config.prune, ramp_epochs=GRADUAL_RAMP * epochs,
                                 updates_per_epoch=GRADUAL_UPDATES_PER_EPOCH)
    if masks is not None:
        hook.set_masks(masks)  # a pruned source: its zeros stay, the curve prunes among the rest
    log(f"gradual pruning over {epochs} epoch(s): the sparsity rises along a cubic curve over "
        f"the first {GRADUAL_RAMP * epochs:g}, {GRADUAL_UPDATES_PER_EPOCH} updates an epoch")
    run_dir = Path(work_dir) / "prune_gradual"
    cfg = config.train_config("prune_gradual", epochs, config.retrain_lr,
                              model=model_spec(model)["name"])
    from squeezelab.train.loop import train

    train(cfg, hooks=[hook, *hooks], model=model, data=data, run_dir=run_dir)
    _finish_training(model)
    masks = hook.masks
    steps: list[dict[str, Any]] = []
    _record(steps, "prune_gradual", model, data, log, protocol, round=1,
            target=config.prune.to_dict(), masked_sparsity=masks.sparsity(),
            retrain_epochs=epochs, run_dir=str(run_dir))
    return masks, steps


def share_and_finetune(
    model: nn.Module, config: CompressConfig, data, work_dir: str | os.PathLike, *,
    masks: Masks | None = None, log: Callable[[str], None] = print_line,
    protocol: EvalProtocol | None = None, hooks: Sequence[TrainHook] = (),
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """K-means share ``model``'s weights in place (exact zeros are pruned: excluded from
    clustering, kept zero), then fine-tune the centroids for ``config.centroid_epochs`` (a run
    directory ``work_dir/centroids`` whose trainable parameters include the codebooks; with
    ``config.reassign_weights`` the kept weights too, each moving to its cheapest cluster as it
    trains: ``quantization/reassign.py``).
    ``masks`` of layers left unshared keep being enforced by a MaskHook while fine-tuning
    (beside ``hooks``). Returns the per-layer sharing summary and the step records (top-1
    under ``protocol``)."""
    if config.sharing is None:
        raise ValueError("share_and_finetune needs config.sharing (a WeightSharingConfig)")
    steps: list[dict[str, Any]] = []
    reassign = bool(config.reassign_weights and config.centroid_epochs and data is not None)
    # reassignment starts each weight from where it was before sharing, not at its centroid
    originals = ({name: unwrap_model(model).get_parameter(name).detach().clone()
                  for name in select_layers(model, config.sharing)} if reassign else None)
    layers = share_weights_(model, config.sharing)
    log(f"weight sharing: {len(layers)} layer(s), bits "
        f"{sorted({v['bits'] for v in layers.values()})}")
    _record(steps, "share", model, data, log, protocol, sharing=config.sharing.to_dict(),
            layer_bits={k: v["bits"] for k, v in layers.items()})
    if config.centroid_epochs and data is not None:
        run_dir = Path(work_dir) / "centroids"
        log(f"fine-tuning centroids {config.centroid_epochs} epoch(s)")
        cfg = config.train_config("centroids", config.centroid_epochs, config.centroid_lr,
                                  weight_decay=config.centroid_weight_decay,
                                  model=model_spec(model)["name"])
        from squeezelab.train.loop import train

        params = dict(model.named_parameters())
        # shared layers keep their zeros through weight_mask; only unshared pruned layers
        # still need the hook
        left = Masks({n: m for n, m in (masks or {}).items() if n in params})
        if reassign:
            enable_reassignment_(model, originals, config.sharing.entropy_weight)
            log("the kept weights train too and change cluster as they do (reassign_weights)")
        train(cfg, hooks=[*([MaskHook(left)] if len(left) else []), *hooks], model=model,
              data=data, run_dir=run_dir)
        extra: dict[str, Any] = {}
        if reassign:
            moved = freeze_assignments_(model)
            kept = sum(v["kept"] for v in moved.values())
            changed = sum(v["moved"] for v in moved.values())
            log(f"{changed:,} of {kept:,} kept weights ({changed / max(kept, 1):.1%}) ended "
                "in another cluster than the sharing gave them")
            extra = {"reassign_weights": True, "moved_weights": changed}
        _finish_training(model)
        _record(steps, "centroids", model, data, log, protocol,
                centroid_epochs=config.centroid_epochs,
                centroid_lr=config.centroid_lr, run_dir=str(run_dir), **extra)
    return layers, steps


def _distill_hooks(config: CompressConfig, model: nn.Module,
                   log: Callable[[str], None]) -> list[TrainHook]:
    """The fine-tuning runs' distillation hook, if ``config.distill`` asks for one and the
    pipeline fine-tunes at all."""
    if not _fine_tunes(config):
        return []
    return distillation_hooks(config.distill, model, log)


def _fine_tunes(config: CompressConfig) -> bool:
    """Whether the pipeline trains at all (so makes run directories)."""
    return bool((config.prune is not None and config.retrain_epochs)
                or (config.sharing is not None and config.centroid_epochs))


def summary_path_for(path: str | os.PathLike) -> Path:
    """``model.sqz`` -> ``model.summary.json``."""
    p = Path(path)
    return p.with_name(p.stem + ".summary.json")


def clear_phase_runs(work_dir: Path, log: Callable[[str], None]) -> None:
    """Remove the fine-tuning runs an earlier compression left in ``work_dir``: compressing to
    the same output again replaces its .sqz and summary, so its phase runs are replaced too
    (a train() into an existing run directory would refuse, asking for --resume)."""
    import shutil

    if not work_dir.is_dir():
        return
    stale = [p for p in sorted(work_dir.iterdir())
             if p.is_dir() and (p.name.startswith("prune_") or p.name == "centroids")]
    if stale:
        log(f"replacing the earlier runs in {work_dir}: {', '.join(p.name for p in stale)}")
    for p in stale:
        shutil.rmtree(p)


def compress(
    source: str | os.PathLike | nn.Module,
    config: CompressConfig,
    output_path: str | os.PathLike,
    data=None,
    work_dir: str | os.PathLike | None = None,
    *,
    class_names: list[str] | None = None,
    log: Callable[[str], None] = print_line,
    protocol: EvalProtocol | None = None,
) -> CompressResult:
    """The whole pipeline: evaluate the dense model -> prune (rounds, retraining) -> share
    weights -> fine-tune centroids -> evaluate -> ``save_compressed`` -> ``load_compressed``
    and evaluate the file (it must equal the in-memory accuracy) -> size report.

    ``source``: a checkpoint path (plain, masked or shared) or a model (not changed: the
    pipeline works on a copy). ``data``: (train, test) ImageTensors; None loads what
    ``config.train`` names (data, limit_train, limit_test). ``work_dir``: where the fine-tuning
    run directories go (default: ``runs/<output stem>-compress``, see ``default_work_dir``).
    ``protocol``: how every step's top-1 is scored (default: fp32, flip-averaged if the source
    checkpoint was trained so, as ``squeezelab eval`` scores it); the summary records it.
    """
    if not isinstance(config, CompressConfig):
        raise TypeError(f"config must be a CompressConfig, got {type(config).__name__}")
    output_path = Path(output_path)
    if output_path.suffix != ".sqz":
        raise ValueError(f"output path must end in .sqz, got {str(output_path)!r}")
    masks = None
    source_meta: dict[str, Any] = {}
    if isinstance(source, nn.Module):
        model = copy.deepcopy(unwrap_model(source))
        source_name = type(source).__name__
    else:
        # a run directory stands for its best checkpoint; the file records which one
        source_name = str(resolve_checkpoint(source))
        loaded = load_compressible(source_name)
        model, masks, source_meta = loaded.model, loaded.masks, loaded.meta
    if shared_modules(model):
        raise ValueError(f"{source_name} is already weight-shared; compress starts from a "
                         "dense or pruned model")
    model.eval()
    class_names = class_names or source_meta.get("class_names")
    if data is None:
        log("loading data")
        data = _load_data(config)
    if class_names is None:
        class_names = list(data[0].classes)
    elif list(class_names) != list(data[1].classes):
        raise ValueError(f"{source_name} was trained on classes {list(class_names)[:5]}..., but "
                         f"the data has {list(data[1].classes)[:5]}...")
    protocol = protocol or EvalProtocol.for_model(source_meta)
    work_dir = Path(work_dir) if work_dir else default_work_dir(output_path, "compress")
    clear_phase_runs(work_dir, log)
    steps: list[dict[str, Any]] = []
    log(f"compressing {source_name} ({model_spec(model)['name']}) -> {output_path}")
    log(f"fine-tuning runs go to {work_dir}" if _fine_tunes(config) else
        "no fine-tuning (0 retrain and centroid epochs): no run directories")
    log(f"top-1 scored {protocol.describe()} on {len(data[1])} test images")
    _record(steps, "dense", model, data, log, protocol)
    hooks = _distill_hooks(config, model, log)
    if config.prune is not None:
        masks, pruned = prune_and_retrain(model, config, data, work_dir, masks=masks, log=log,
                                          protocol=protocol, hooks=hooks)
        steps += pruned
    if config.fold_batchnorm:
        # After pruning (retraining wants BatchNorm), before sharing (cluster the weights that
        # ship). Zeros stay zero; the layout, hence the parameter names, changes.
        model = fold_batchnorm(model.eval())
        masks = Masks.from_model(model) if masks is not None else None
        log("folded BatchNorm into the convolutions")
        _record(steps, "fold_bn", model, data, log, protocol)
    sharing: dict[str, Any] = {}
    if config.sharing is not None:
        sharing, shared_steps = share_and_finetune(model, config, data, work_dir, masks=masks,
                                                    log=log, protocol=protocol, hooks=hooks)
        steps += shared_steps
    if config.float_dtype != "float32" or config.dense_bits is not None:
        round_stored_floats_(model, config.float_dtype, config.dense_bits)
        dense = ("" if config.dense_bits is None
                 else f"; biases and BatchNorm to {config.dense_bits}-bit levels")
        log(f"rounded the stored floats (codebooks{', biases, BatchNorm' if not dense else ''}) "
            f"to {config.float_dtype}{dense}")
        _record(steps, _rounding_step(config), model, data, log, protocol)
    from squeezelab.data.preprocess import Preprocess

    final = steps[-1]
    meta = {
        "source": source_name,
        "compress_config": config.to_dict(),
        "steps": steps,
        "top1": final.get("top1"),
        "protocol": protocol.to_dict(),  # how that top-1 was scored
        "sparsity": final["sparsity"],
        # how inputs are prepared: those of the images it was fine-tuned and scored on
        **Preprocess.from_data(data[0]).to_meta(),
    }
    if config.int8_calibration:
        from squeezelab.int8 import calibrate, calibration_images

        meta["int8"] = calibrate(model, calibration_images(data[0], config.int8_calibration))
        log(f"int8: activation ranges measured on {meta['int8']['images']} training images")
    save_compressed(model, output_path, class_names=class_names, meta=meta,
                    gap_bits=config.gap_bits, float_dtype=config.float_dtype,
                    coder=config.coder, dense_bits=config.dense_bits)
    log(f"wrote {output_path} ({output_path.stat().st_size:,} bytes)")
    loaded_model = load_compressed(output_path)
    loaded_rec = _record([], "loaded", loaded_model, data, log, protocol)
    if "top1" in final and loaded_rec["top1"] != final["top1"]:
        raise RuntimeError(
            f"{output_path}: the loaded file scores top-1 {loaded_rec['top1']:.6f}, the "
            f"in-memory model {final['top1']:.6f}; the file does not reproduce the model")
    steps.append(loaded_rec)
    if config.int8_calibration:
        from squeezelab.inference import OnnxModel
        from squeezelab.int8 import quantized_onnx

        # what the file gives as int8 (an ONNX Runtime model: scored like any other)
        int8 = OnnxModel(quantized_onnx(loaded_model, meta["int8"])).eval()
        _record(steps, "int8", int8, data, log, protocol, sparsity=loaded_rec["sparsity"])
    try:
        import zstandard  # noqa: F401  (the fp32 baselines need it)

        report = size_report(output_path, fp32=model)
    except ImportError:
        report = size_report(output_path)
    size = dict(report.totals)
    log(f"size: {size['file_bytes']:,} bytes, {size['ratio_fp32']:.1f}x smaller than fp32 "
        f"({size['fp32_bytes']:,} bytes)")
    summary = {
        "output": str(output_path),
        "source": source_name,
        "model": model_spec(model),
        "config": config.to_dict(),
        "steps": steps,
        "sharing": sharing,
        "dense_top1": steps[0].get("top1"),
        "final_top1": loaded_rec.get("top1"),
        "protocol": protocol.to_dict(),  # how every top-1 above was scored
        "work_dir": str(work_dir) if _fine_tunes(config) else None,
        "size": size,
        "layers": list(report),
    }
    summary_path = summary_path_for(output_path)
    atomic_write_bytes(summary_path, json.dumps(summary, indent=2, default=json_default).encode())
    log(f"summary: {summary_path}")
    return CompressResult(path=output_path, summary_path=summary_path, model=model,
                          loaded=loaded_model, steps=steps, size=size, summary=summary)


__all__ = [
    "CompressConfig", "CompressResult", "Compressible", "INHERITED_TRAIN_FIELDS",
    "FineTuningDistillConfig", "clear_phase_runs", "compress", "compress_config_for",
    "default_work_dir", "distillation_hooks", "fine_tune_train_section",
    "evaluate_top1",
    "load_compressible", "prune_and_retrain", "save_compressible", "share_and_finetune",
    "summary_path_for", "weight_sparsity",
]
