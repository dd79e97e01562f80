"""``squeezelab prune | sensitivity | quantize | compress``: the Deep Compression pipeline (Han
et al., arXiv 1510.00149) and its pieces from the command line.

Thin commands over ``squeezelab.compress``: they parse flags into the library's typed configs,
print what they do step by step, and leave every error about bad input to the library (a
ValueError: exit status 2).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from squeezelab.cli import DefaultsHelpFormatter, add_data_source_flags, check_checkpoint
from squeezelab.config import parse_key_values


def _number(kind: type) -> Callable[[str], Any]:
    """A LAYER=VALUE list's value reader: ``kind(text)``, or an error naming the text."""
    def read(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
                from None
    return read


def _rules(items: list[str], what: str = "--rule") -> dict[str, float]:
    """``["conv3x3=0.6", "classifier=0.3"]`` -> ``{"conv3x3": 0.6, "classifier": 0.3}``: a
    repeatable LAYER=VALUE flag (items may also be joined by commas) through the one KEY=VALUE
    parser; ``--rule`` values are sparsities, ``--layer-bits`` values integers."""
    return parse_key_values(items or [], what, value=_number(float if what == "--rule" else int),
                            form="LAYER=VALUE")


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="cifar10 | cifar100 | class-folder root "
                   "(default: what the checkpoint was trained on, else CIFAR-10)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--limit-train", type=int, default=None, help="balanced train subset")
    p.add_argument("--limit-test", type=int, default=None, help="balanced test subset")
    p.add_argument("--batch-size", type=int, default=None)
    add_data_source_flags(p)


#: the data flags (``_add_data_flags``) that choose the data fine-tuned and scored on
_DATA_FLAGS = ("data", "data_root", "limit_train", "limit_test", "batch_size")


def _data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The data flags given, as TrainConfig fields (a flag not given is left out)."""
    out = {k: getattr(args, k) for k in _DATA_FLAGS if getattr(args, k, None) is not None}
    for key in ("download", "skip_bad_images"):  # this command's choice, not the run's
        if getattr(args, key, False):
            out[key] = True
    return out


def _train_section(args: argparse.Namespace, meta: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig fields for fine-tuning runs: the checkpoint's own config, then the data
    flags (``workflows.deep_compression.fine_tune_train_section``)."""
    from squeezelab.workflows.deep_compression import fine_tune_train_section

    return fine_tune_train_section(meta, _data_overrides(args))


def _load_data(train_section: dict[str, Any], need_train: bool = True):
    from squeezelab.train.data import load_run_data

    print(f"loading data: {train_section.get('data') or 'CIFAR-10'}", flush=True)
    return load_run_data({**train_section, "progress": False}, train=need_train)


def _check_classes(model_meta: dict[str, Any], data, path: str) -> None:
    names = model_meta.get("class_names")
    if names and list(names) != list(data.classes):
        raise ValueError(f"{path} was trained on classes {names[:5]}..., but the data has "
                         f"{list(data.classes)[:5]}...")


# ------------------------------------------------------------------------------------------
# parsers
# ------------------------------------------------------------------------------------------
CHECKPOINT_HELP = "checkpoint (stem, .json or .safetensors) or a run directory (its best)"


def add_commands(sub: argparse._SubParsersAction) -> None:
    fmt = DefaultsHelpFormatter

    p = sub.add_parser("prune", help="magnitude-prune a checkpoint (optionally retrain under "
                       "the masks); writes a checkpoint with masks. With --channels: remove "
                       "whole channels, a smaller and faster model", formatter_class=fmt)
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--sparsity", type=float, default=None,
                   help="fraction pruned (0..1) of every layer no --rule names")
    p.add_argument("--channels", default=None, metavar="FRACTION|dead",
                   help="structured pruning of a SqueezeNet: cut out the FRACTION (0..1) "
                   "least important channels (--channel-score) of every removable conv, or "
                   "the dead ones (all-zero filters); the model is rebuilt smaller")
    p.add_argument("--channel-score", choices=("auto", "filter_norm", "bn_scale"),
                   default="auto", help="--channels FRACTION ranks channels by this (auto: "
                   "the BatchNorm scale |gamma| behind BatchNorm, else the filter's L2 norm)")
    p.add_argument("--dead-eps", type=float, default=1e-8,
                   help="--channels dead: a filter whose L2 norm is at most this is dead. "
                   "Group lasso shrinks filters toward zero without reaching it: raise this to "
                   "cut the near-zero ones too (then the outputs change a little: fine-tune)")
    p.add_argument("--rule", action="append", default=[], metavar="LAYER=SPARSITY",
                   help="per-layer target: a layer type (conv3x3, squeeze, classifier, ...) or "
                   "a glob over parameter names (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="LAYER",
                   help="layer type or glob never pruned (repeatable)")
    p.add_argument("--scope", choices=("layer", "global"), default="layer")
    p.add_argument("--rounds", type=int, default=1, help="prune -> retrain rounds")
    p.add_argument("--retrain-epochs", type=int, default=0, help="retraining per round")
    p.add_argument("--retrain-lr", type=float, default=0.01)
    _add_data_flags(p)
    p.add_argument("-o", "--output", required=True, help="output checkpoint (stem or .json)")
    p.add_argument("--json", dest="json_out", default=None,
                   help="also write what was done and measured here (with the command)")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("sensitivity", help="per-layer pruning sensitivity: table, PNG plot and "
                       "suggested sparsities", formatter_class=fmt)
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--sparsities", type=float, nargs="+",
                   default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    p.add_argument("--max-drop", type=float, default=0.01,
                   help="top-1 drop (fraction) allowed for the suggested sparsities")
    _add_data_flags(p)
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("quantize", help="quantize a checkpoint; reports accuracy before/after "
                       "and size", formatter_class=fmt)
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    from squeezelab.compress.quantization.registry import QUANTIZERS

    p.add_argument("--method", required=True, metavar="|".join(QUANTIZERS),
                   help="; ".join(f"{q.name}: {q.help}" for q in QUANTIZERS.values()))
    p.add_argument("--bits", type=int, default=None, help="kmeans: bits for conv and linear "
                   "(default 8 conv / 5 linear); fixed: total bits (default 8)")
    p.add_argument("--layer-bits", action="append", default=[], metavar="LAYER=BITS",
                   help="kmeans: bits per layer type or glob (repeatable)")
    p.add_argument("--energy", type=float, default=0.9, help="lowrank: energy kept")
    p.add_argument("--num-clusters", type=int, default=256, help="pq/rq: codewords")
    p.add_argument("--subvector-dim", type=int, default=4, help="pq/rq: vector length")
    p.add_argument("--calibration-batches", type=int, default=4, help="int8: batches")
    _add_data_flags(p)
    p.add_argument("-o", "--output", required=True,
                   help="kmeans: the .sqz file; other methods: a JSON report")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("compress", help="the whole Deep Compression pipeline: prune -> retrain "
                       "-> share -> fine-tune centroids -> .sqz", formatter_class=fmt)
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("-o", "--output", required=True, help="output .sqz file")
    p.add_argument("--recipe", default=None, help="YAML recipe with a compress: section; "
                   "flags override it")
    p.add_argument("--sparsity", type=float, default=None)
    p.add_argument("--rule", action="append", default=[], metavar="LAYER=SPARSITY")
    p.add_argument("--scope", choices=("layer", "global"), default=None)
    p.add_argument("--no-prune", action="store_true", help="skip pruning")
    p.add_argument("--prune-rounds", type=int, default=None)
    p.add_argument("--prune-schedule", choices=("geometric", "linear"), default=None)
    p.add_argument("--retrain-epochs", type=int, default=None)
    p.add_argument("--retrain-lr", type=float, default=None)
    p.add_argument("--conv-bits", type=int, default=None)
    p.add_argument("--classifier-bits", type=int, default=None)
    p.add_argument("--layer-bits", action="append", default=[], metavar="LAYER=BITS")
    p.add_argument("--no-share", action="store_true", help="skip weight sharing")
    p.add_argument("--centroid-epochs", type=int, default=None)
    p.add_argument("--centroid-lr", type=float, default=None)
    p.add_argument("--gap-bits", type=int, default=None)
    p.add_argument("--fold-batchnorm", action="store_true", default=None,
                   help="fold BatchNorm into the convs after pruning (smaller file)")
    p.add_argument("--optimizer", default=None)
    p.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16"))
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--work-dir", default=None, help="where the fine-tuning runs go")
    _add_data_flags(p)
    p.set_defaults(func=cmd_compress)



# ------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------
def cmd_prune(args: argparse.Namespace) -> int:
    from squeezelab.checkpoint import checkpoint_paths
    from squeezelab.compress.pruning.magnitude import PruneConfig
    from squeezelab.data.preprocess import META_KEYS, Preprocess
    from squeezelab.workflows.deep_compression import (
        CompressConfig,
        load_compressible,
        prune_and_retrain,
        save_compressible,
    )

    if args.json_out and Path(args.json_out).resolve() == checkpoint_paths(
            args.output)[0].resolve():
        raise ValueError(f"--json {args.json_out} is the output checkpoint's own JSON file; "
                         "choose another name")
    if args.channels is not None:
        return prune_channels(args)
    prune_cfg = PruneConfig(sparsity=args.sparsity, rules=_rules(args.rule),
                            scope=args.scope, exclude=args.exclude)
    args.checkpoint = check_checkpoint(args.checkpoint)
    src = load_compressible(args.checkpoint)
    print(f"loaded {args.checkpoint}", flush=True)
    train_section = _train_section(args, src.meta)
    cfg = CompressConfig(prune=prune_cfg, prune_rounds=args.rounds,
                         retrain_epochs=args.retrain_epochs, retrain_lr=args.retrain_lr,
                         sharing=None, train=train_section)
    data = None
    if args.retrain_epochs:
        train, test = _load_data(train_section)
        _check_classes(src.meta, test, args.checkpoint)
        data = (train, test)
    out = Path(args.output)
    masks, steps = prune_and_retrain(src.model, cfg, data, out.parent / (out.stem + "_runs"),
                                     masks=src.masks)
    meta = {k: src.meta[k] for k in ("config", "class_names", *META_KEYS) if k in src.meta}
    if data is not None:  # retrained: the record of the images it was retrained on
        meta.update(Preprocess.from_data(data[0]).to_meta())
    meta["prune"] = {"config": cfg.to_dict(), "steps": steps}
    path = save_compressible(out, src.model, masks=masks, meta=meta)
    for name, s in masks.layer_sparsity().items():
        print(f"  {name:<40} {100 * s:5.1f}% pruned")
    print(f"overall sparsity {masks.sparsity():.4f}; wrote {path}")
    _write_json(args, {"output": str(path), "sparsity": masks.sparsity(), **meta["prune"]})
    return 0


def _write_json(args: argparse.Namespace, record: dict[str, Any]) -> None:
    """--json: the record plus the command and the machine that produced it."""
    if args.json_out:
        import sys

        from squeezelab.train.run_dir import environment

        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(
            {"command": "squeezelab " + " ".join(sys.argv[1:]), "checkpoint": args.checkpoint,
             **record, "environment": environment()}, indent=2, default=str) + "\n")
        print(f"wrote {args.json_out}")


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from squeezelab.compress.pruning.sensitivity import (
        plot_sensitivity,
        sensitivity_analysis,
        sensitivity_table,
        suggest_sparsities,
    )
    from squeezelab.workflows.deep_compression import evaluate_top1, load_compressible

    for s in args.sparsities:
        if not 0 <= s < 1:
            raise ValueError(f"--sparsities must be in [0, 1), got {s}")
    args.checkpoint = check_checkpoint(args.checkpoint)
    src = load_compressible(args.checkpoint)
    _, test = _load_data(_train_section(args, src.meta), need_train=False)
    _check_classes(src.meta, test, args.checkpoint)
    print(f"pruning each layer of {args.checkpoint} alone at {args.sparsities}", flush=True)
    result = sensitivity_analysis(src.model, lambda m: evaluate_top1(m, test)["top1"],
                                  args.sparsities)
    print(sensitivity_table(result))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    plot_sensitivity(result, out / "sensitivity.png", "top-1")
    suggested = suggest_sparsities(result, args.max_drop)
    (out / "sensitivity.json").write_text(json.dumps(
        {name: {str(s): v for s, v in row.items()} for name, row in result.items()}, indent=2))
    (out / "suggested.json").write_text(json.dumps(suggested, indent=2))
    print(f"wrote {out / 'sensitivity.png'}, {out / 'sensitivity.json'}, "
          f"{out / 'suggested.json'} (max drop {args.max_drop})")
    return 0


def _quant_config(args: argparse.Namespace):
    """The ``--method``'s config, built by its registration in
    ``compress/quantization/registry.py`` from this command's options."""
    from squeezelab.compress.quantization.registry import QuantizeOptions, quantizer_config

    options = QuantizeOptions(bits=args.bits, layer_bits=_rules(args.layer_bits, "--layer-bits"),
                              energy=args.energy, num_clusters=args.num_clusters,
                              subvector_dim=args.subvector_dim)
    return quantizer_config(args.method, options, what="--method")


def _report_bytes(report: Any) -> tuple[float | None, float | None]:
    """(quantized bytes, fp32 bytes) summed over a transform's per-layer report, if it has them."""
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


def cmd_quantize(args: argparse.Namespace) -> int:
    from squeezelab.compress.format.size_report import format_size_report, size_report
    from squeezelab.compress.format.sqz import save_compressed
    from squeezelab.compress.quantization.registry import quantize_
    from squeezelab.data.preprocess import Preprocess
    from squeezelab.workflows.deep_compression import evaluate_top1, load_compressible

    config = _quant_config(args)
    out = Path(args.output)
    if args.method == "kmeans" and out.suffix != ".sqz":
        raise ValueError(f"--method kmeans writes a .sqz file; -o must end in .sqz, got {out}")
    args.checkpoint = check_checkpoint(args.checkpoint)
    src = load_compressible(args.checkpoint)
    _, test = _load_data(_train_section(args, src.meta), need_train=False)
    _check_classes(src.meta, test, args.checkpoint)
    before = evaluate_top1(src.model, test)
    print(f"before: top-1 {before['top1']:.4f}", flush=True)
    calibration = []
    if args.method == "int8":
        from squeezelab.data import BatchLoader

        loader = BatchLoader(test, 64, train=False, augment=None)
        loader.set_epoch(0)
        calibration = [b for _, b in zip(range(args.calibration_batches), loader)]
    print(f"quantizing with {type(config).__name__}: {config.to_dict()}", flush=True)
    report = quantize_(src.model, config, calibration)
    after = evaluate_top1(src.model, test)
    print(f"after:  top-1 {after['top1']:.4f} ({100 * (after['top1'] - before['top1']):+.2f} "
          "points)")
    result: dict[str, Any] = {"checkpoint": args.checkpoint, "method": args.method,
                              "config": config.to_dict(), "top1_before": before["top1"],
                              "top1_after": after["top1"], "layers": report}
    if args.method == "kmeans":
        # the record of the images the accuracy above was measured on
        save_compressed(src.model, out, class_names=src.meta.get("class_names"),
                        meta={"quantize": result, **Preprocess.from_data(test).to_meta()})
        rep = size_report(out)
        print(format_size_report(rep))
        result["size"] = dict(rep.totals)
        print(f"wrote {out} ({out.stat().st_size:,} bytes, "
              f"{rep.totals['ratio_fp32']:.1f}x smaller than fp32)")
        out.with_name(out.stem + ".summary.json").write_text(
            json.dumps(result, indent=2, default=str))
        return 0
    q_bytes, f_bytes = _report_bytes(report)
    if q_bytes is not None:
        result["size_bytes"], result["fp32_bytes"] = q_bytes, f_bytes
        print(f"quantized layers: {q_bytes:,.0f} bytes vs {f_bytes:,.0f} fp32 "
              f"({f_bytes / max(q_bytes, 1):.1f}x)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")
    return 0


def _channel_selection(text: str) -> float | None:
    """--channels: "dead" -> None, else the fraction of channels removed per layer."""
    if text == "dead":
        return None
    try:
        fraction = float(text)
    except ValueError:
        raise ValueError(f"--channels takes a fraction in [0, 1) or 'dead', got {text!r}") \
            from None
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--channels fraction must be in [0, 1), got {fraction}")
    return fraction


def _forward_speed(model, image_size: tuple[int, int]) -> float:
    """Images/s of fp32 eval forward passes of batch 64 on this CPU (after warm-up)."""
    import torch

    from squeezelab.metrics import time_forward

    return time_forward(model, torch.randn(64, 3, *image_size), warmup=2, iters=5)[
        "images_per_s"]


def prune_channels(args: argparse.Namespace) -> int:
    """``prune --channels``: remove whole channels, rebuild the smaller SqueezeNet, optionally
    fine-tune it, and report parameters, MACs, speed and top-1 before and after."""
    import torch

    from squeezelab.checkpoint import save_checkpoint
    from squeezelab.compress.pruning.channels import (
        find_dead_channels,
        remove_channels,
        smallest_channels,
    )
    from squeezelab.compress.quantization.weight_sharing import shared_modules
    from squeezelab.data.preprocess import Preprocess
    from squeezelab.metrics import count_macs, count_parameters
    from squeezelab.models import model_spec
    from squeezelab.workflows.deep_compression import (
        CompressConfig,
        evaluate_top1,
        load_compressible,
    )

    fraction = _channel_selection(args.channels)
    if args.sparsity is not None or args.rule:
        raise ValueError("--channels removes whole channels; --sparsity/--rule prune single "
                         "weights: give one or the other")
    args.checkpoint = check_checkpoint(args.checkpoint)
    src = load_compressible(args.checkpoint)
    if shared_modules(src.model):
        raise ValueError(f"{args.checkpoint} is weight-shared; remove channels from the dense "
                         "(or magnitude-pruned) checkpoint before sharing")
    print(f"loaded {args.checkpoint}", flush=True)
    train_section = _train_section(args, src.meta)
    train, test = _load_data(train_section, need_train=bool(args.retrain_epochs))
    _check_classes(src.meta, test, args.checkpoint)
    model = src.model.eval()
    selected = (find_dead_channels(model, args.dead_eps) if fraction is None
                else smallest_channels(model, fraction, by=args.channel_score))
    new, report = remove_channels(model, selected, args.dead_eps)
    for name, idx in report.removed.items():
        print(f"  {name:<28} -{len(idx)} channels")
    if not report.removed:
        print("  no channel to remove" + (" (no dead channel: train with --group-lasso-weight "
                                          "first, or cut a FRACTION)" if fraction is None
                                          else ""))
    size = test.image_size  # (height, width) of the images it is scored on
    before = {"top1": evaluate_top1(model, test)["top1"], "parameters": count_parameters(model),
              "macs": count_macs(model, size), "images_per_s": _forward_speed(model, size)}
    print(f"before: top-1 {before['top1']:.4f}", flush=True)
    cfg = CompressConfig(prune=None, retrain_epochs=args.retrain_epochs,
                         retrain_lr=args.retrain_lr, sharing=None, train=train_section)
    out = Path(args.output)
    if args.retrain_epochs:
        from squeezelab.train.loop import train as train_run

        print(f"fine-tuning {args.retrain_epochs} epoch(s)", flush=True)
        run_cfg = cfg.train_config("channels", args.retrain_epochs, args.retrain_lr,
                                   model=model_spec(new)["name"])
        train_run(run_cfg, model=new, data=(train, test),
                  run_dir=out.parent / (out.stem + "_runs") / "channels")
        new.to(memory_format=torch.contiguous_format).eval()  # as saved and loaded back
    after = {"top1": evaluate_top1(new, test)["top1"], "parameters": count_parameters(new),
             "macs": count_macs(new, size), "images_per_s": _forward_speed(new, size)}
    print(f"after:  top-1 {after['top1']:.4f} "
          f"({100 * (after['top1'] - before['top1']):+.2f} points)")
    print(f"parameters {before['parameters']:,} -> {after['parameters']:,}; MACs "
          f"{before['macs'] / 1e6:.1f}M -> {after['macs'] / 1e6:.1f}M; CPU fp32 batch 64 "
          f"{before['images_per_s']:.0f} -> {after['images_per_s']:.0f} img/s "
          f"({after['images_per_s'] / before['images_per_s']:.2f}x)")
    meta = {k: src.meta[k] for k in ("config", "class_names") if k in src.meta}
    meta.update(Preprocess.from_data(test).to_meta())
    meta["channel_prune"] = {"channels": args.channels, "report": report.to_dict(),
                             "retrain_epochs": args.retrain_epochs,
                             "before": before, "after": after}
    path = save_checkpoint(out, new, meta=meta)
    print(f"wrote {path} ({model_spec(new)['name']} with fire_config "
          f"{[list(f) for f in report.fire_config]})")
    _write_json(args, {"output": str(path), **meta["channel_prune"]})
    return 0


#: compress flags that set the CompressConfig field of the same name
_COMPRESS_FLAGS = ("prune_rounds", "prune_schedule", "retrain_epochs", "retrain_lr",
                   "centroid_epochs", "centroid_lr", "gap_bits", "fold_batchnorm")


def _compress_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The compress flags given, in CompressConfig's words (``compress_config_for``'s
    ``overrides``); a flag not given is left out, so the recipe's value stands."""
    out: dict[str, Any] = {k: getattr(args, k) for k in _COMPRESS_FLAGS
                           if getattr(args, k) is not None}
    prune = {"sparsity": args.sparsity, "scope": args.scope, "rules": _rules(args.rule) or None}
    prune = {k: v for k, v in prune.items() if v is not None}
    if args.no_prune:
        out["prune"] = None
    elif prune:
        out["prune"] = prune
    bits = {k: v for k, v in (("conv", args.conv_bits), ("classifier", args.classifier_bits))
            if v is not None}
    bits.update(_rules(args.layer_bits, "--layer-bits"))
    if args.no_share:
        out["sharing"] = None
    elif bits:
        out["sharing"] = {"bits": bits}
    train = {k: getattr(args, k) for k in ("optimizer", "precision", "seed")
             if getattr(args, k, None) is not None}
    out["train"] = {**_data_overrides(args), **train}
    return out


def _compress_config(args: argparse.Namespace, checkpoint: Any):
    """The command's CompressConfig: the workflow's one merge (``compress_config_for``) of the
    recipe, the checkpoint's own training settings and the flags, the same one
    ``benchmarks/compress_cifar.py`` uses."""
    from squeezelab.workflows.deep_compression import compress_config_for

    return compress_config_for(checkpoint, args.recipe, _compress_overrides(args))


def cmd_compress(args: argparse.Namespace) -> int:
    from squeezelab.workflows.deep_compression import compress

    out = Path(args.output)
    if out.suffix != ".sqz":
        raise ValueError(f"-o must name a .sqz file, got {args.output!r}")
    args.checkpoint = check_checkpoint(args.checkpoint)
    config = _compress_config(args, args.checkpoint)
    print("config: " + json.dumps(config.to_dict()), flush=True)
    # compress() loads the data config.train names and checks its classes against the
    # checkpoint's, exactly as for every other caller (the benchmark): same config, same file
    result = compress(args.checkpoint, config, out, work_dir=args.work_dir)
    print()
    print(f"{'step':<12} {'top-1':>7} {'sparsity':>9}")
    for s in result.steps:
        print(f"{s['step']:<12} {s.get('top1', float('nan')):>7.4f} {s['sparsity']:>9.4f}")
    size = result.size
    print(f"{out}: {size['file_bytes']:,} bytes, {size['ratio_fp32']:.1f}x smaller than fp32; "
          f"top-1 {result.steps[0]['top1']:.4f} -> {result.steps[-1]['top1']:.4f}")
    return 0
