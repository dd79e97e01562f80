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

from squeezelab.cli import (
    DefaultsHelpFormatter,
    add_data_source_flags,
    check_checkpoint,
    parse_bool,
)
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
    p.add_argument("--test-time-flip", type=parse_bool, default=None, metavar="BOOL",
                   help="score top-1 averaging each image's logits with its mirror's "
                   "(default: as the model was trained, so figures match squeezelab eval's); "
                   "every top-1 is scored fp32 on CPU, and printed with how it was scored")


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
    p.add_argument("--quality", type=float, default=None, metavar="Q",
                   help="Han et al.'s rule instead of --sparsity: prune |w| < Q x the "
                   "standard deviation of the layer's weights, in every layer no --rule names "
                   "(--rule values are then qualities too)")
    p.add_argument("--channels", default=None, metavar="FRACTION|dead",
                   help="structured pruning of a SqueezeNet: cut out the FRACTION (0..1) "
                   "least important channels (--channel-score) of every removable conv, or "
                   "the dead ones (all-zero filters); the model is rebuilt smaller")
    p.add_argument("--drop-fires", type=int, default=None, metavar="N",
                   help="layer pruning of a SqueezeNet: replace N Fire modules with equal "
                   "input and output widths by the identity, each the one whose removal costs "
                   "the least top-1 on --selection-images training images")
    p.add_argument("--selection-images", type=int, default=1000,
                   help="--drop-fires: training images the Fires are chosen on")
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
    p.add_argument("--work-dir", default=None, help="where the retraining / fine-tuning runs "
                   "go (default: runs/<output stem>-prune, or -channels with --channels)")
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
                   help="the quantized model: a checkpoint (stem or .json) that squeezelab "
                   "eval and load_model read back; kmeans may also write a .sqz file")
    p.add_argument("--json", dest="json_out", default=None,
                   help="also write the report (per-layer sizes, top-1 before/after and how "
                   "it was scored, the command) here")
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
    p.add_argument("--work-dir", default=None, help="where the fine-tuning runs go (default: "
                   "runs/<output stem>-compress; announced at the start and the end)")
    _add_data_flags(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("learn-arch", help="architecture learning (tri-state ReLU gates, "
                       "Srinivas & Babu): learn which channels a SqueezeNet needs, cut the "
                       "rest out, fine-tune; writes the smaller model", formatter_class=fmt)
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("-o", "--output", required=True, help="output checkpoint (stem or .json)")
    p.add_argument("--learn-epochs", type=int, default=None, help="epochs of gated training "
                   "(default 5)")
    p.add_argument("--learn-lr", type=float, default=None,
                   help="lr of the gated training (default: the model's own)")
    p.add_argument("--width-count", type=float, default=None,
                   help="weight of the term that pulls every gate w toward 0 (per channel: "
                   "its parameters, mean 1; default 5e-3): larger removes more")
    p.add_argument("--width-binarize", type=float, default=None,
                   help="weight of sum w(1 - w), pushing gates to 0 or 1, reached at the end "
                   "of the learning run (default 5e-2)")
    p.add_argument("--depth-binarize", type=float, default=None,
                   help="weight of sum d(1 - d) over the layers' d (default 5e-2)")
    p.add_argument("--cost", choices=("parameters", "neurons"), default=None,
                   help="what --width-count charges per channel (default parameters)")
    p.add_argument("--learn-depth", type=parse_bool, default=None, metavar="BOOL",
                   help="learn each layer's d (linear or ReLU; default true)")
    p.add_argument("--gate-lr", type=float, default=None,
                   help="the gates' lr (default: the run's)")
    p.add_argument("--binarize-ramp", type=parse_bool, default=None, metavar="BOOL",
                   help="grow the binarizing terms from 0 over the learning run (default true)")
    p.add_argument("--freeze-scales", type=parse_bool, default=None, metavar="BOOL",
                   help="hold the BatchNorm scale before each gate fixed while learning, so it "
                   "cannot take over what the gate lets through (default true)")
    p.add_argument("--threshold", type=float, default=None, help="round gates here (0.5)")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="fine-tuning of the cut model (default 2; 0: none)")
    p.add_argument("--finetune-lr", type=float, default=None,
                   help="lr of the fine-tuning (default: the model's own)")
    p.add_argument("--work-dir", default=None, help="where the learn and finetune runs go "
                   "(default: runs/<output stem>-arch)")
    _add_data_flags(p)
    p.add_argument("--json", dest="json_out", default=None,
                   help="also write the widths and every measurement here (with the command)")
    p.set_defaults(func=cmd_learn_arch)



# ------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------
def _protocol(args: argparse.Namespace, meta: dict[str, Any]):
    """The one evaluation protocol of a compression command: fp32, flip-averaged when
    ``--test-time-flip`` says so, else as the model was trained (as ``squeezelab eval``
    scores it), used for every top-1 the command reports."""
    from squeezelab.train.evaluate import EvalProtocol

    return EvalProtocol.for_model(meta, flip=getattr(args, "test_time_flip", None))


def _test_data(args: argparse.Namespace, meta: dict[str, Any], train_section: dict[str, Any]):
    """(test split to score on, None) or (None, why top-1 cannot be measured): a checkpoint
    that records no training data (no config) is scored only on the --data it is given,
    never on a guess."""
    if args.data is None and not meta.get("config"):
        return None, (f"{args.checkpoint} records no training data and no --data was given; "
                      "pass --data to score it")
    _, test = _load_data(train_section, need_train=False)
    _check_classes(meta, test, args.checkpoint)
    return test, None


def _change(before: float | None, after: float | None) -> str:
    return "" if before is None or after is None else \
        f" ({100 * (after - before):+.2f} points)"


def cmd_prune(args: argparse.Namespace) -> int:
    from squeezelab.checkpoint import checkpoint_paths
    from squeezelab.compress.pruning.magnitude import PruneConfig
    from squeezelab.data.preprocess import META_KEYS, Preprocess
    from squeezelab.workflows.deep_compression import (
        CompressConfig,
        _clear_phase_runs,
        default_work_dir,
        evaluate_top1,
        load_compressible,
        prune_and_retrain,
        save_compressible,
    )

    if args.json_out and Path(args.json_out).resolve() == checkpoint_paths(
            args.output)[0].resolve():
        raise ValueError(f"--json {args.json_out} is the output checkpoint's own JSON file; "
                         "choose another name")
    if args.channels is not None and args.drop_fires is not None:
        raise ValueError("--channels and --drop-fires are two kinds of pruning: give one")
    if args.channels is not None:
        return prune_channels(args)
    if args.drop_fires is not None:
        return prune_fire_layers(args)
    prune_cfg = PruneConfig(sparsity=args.sparsity, rules=_rules(args.rule),
                            scope=args.scope, exclude=args.exclude,
                            method="magnitude" if args.quality is None else "threshold",
                            quality=args.quality)
    args.checkpoint = check_checkpoint(args.checkpoint)
    src = load_compressible(args.checkpoint)
    print(f"loaded {args.checkpoint}", flush=True)
    train_section = _train_section(args, src.meta)
    cfg = CompressConfig(prune=prune_cfg, prune_rounds=args.rounds,
                         retrain_epochs=args.retrain_epochs, retrain_lr=args.retrain_lr,
                         sharing=None, train=train_section)
    out = Path(args.output)
    work_dir = Path(args.work_dir) if args.work_dir else default_work_dir(out, "prune")
    protocol = _protocol(args, src.meta)
    train = why = None
    if args.retrain_epochs:
        train, test = _load_data(train_section)
        _check_classes(src.meta, test, args.checkpoint)
        _clear_phase_runs(work_dir, print)
        print(f"retraining runs go to {work_dir}", flush=True)
    else:
        test, why = _test_data(args, src.meta, train_section)
    before = None
    if test is not None:
        before = evaluate_top1(src.model, test, protocol)["top1"]
        print(f"before: top-1 {before:.4f} ({protocol.describe()}, {len(test)} test images)",
              flush=True)
    else:
        print(f"top-1 not measured: {why}")
    masks, steps = prune_and_retrain(src.model, cfg, (train, test) if test is not None else None,
                                     work_dir, masks=src.masks, protocol=protocol)
    after = steps[-1].get("top1")
    meta = {k: src.meta[k] for k in ("config", "class_names", *META_KEYS) if k in src.meta}
    if train is not None:  # retrained: the record of the images it was retrained on
        meta.update(Preprocess.from_data(train).to_meta())
    meta["prune"] = {"config": cfg.to_dict(), "steps": steps, "top1_before": before,
                     "top1_after": after, "protocol": protocol.to_dict(),
                     "work_dir": str(work_dir) if args.retrain_epochs else None}
    path = save_compressible(out, src.model, masks=masks, meta=meta)
    for name, s in masks.layer_sparsity().items():
        print(f"  {name:<40} {100 * s:5.1f}% pruned")
    if after is not None:
        print(f"after:  top-1 {after:.4f} ({protocol.describe()}){_change(before, after)}")
    print(f"overall sparsity {masks.sparsity():.4f}; wrote {path}")
    if args.retrain_epochs:
        print(f"retraining runs: {work_dir}")
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
    from squeezelab.compress.pruning.sensitivity import sensitivity_table
    from squeezelab.workflows.deep_compression import load_compressible
    from squeezelab.workflows.sensitivity import run_sensitivity

    for s in args.sparsities:
        if not 0 <= s < 1:
            raise ValueError(f"--sparsities must be in [0, 1), got {s}")
    args.checkpoint = check_checkpoint(args.checkpoint)
    src = load_compressible(args.checkpoint)
    _, test = _load_data(_train_section(args, src.meta), need_train=False)
    _check_classes(src.meta, test, args.checkpoint)
    protocol = _protocol(args, src.meta)
    print(f"pruning each layer of {args.checkpoint} alone at {args.sparsities}; top-1 scored "
          f"{protocol.describe()} on {len(test)} test images", flush=True)
    result = run_sensitivity(src.model, test, args.output, args.sparsities, args.max_drop,
                             protocol=protocol)
    print(f"top-1 ({protocol.describe()}) with one layer pruned:")
    print(sensitivity_table(result.top1))
    print(f"wrote {result.png}, {result.json}, {result.suggested_json} "
          f"(max drop {args.max_drop})")
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
    """Quantize a checkpoint, score it before and after under one protocol and write the
    quantized model: a ``.sqz`` (kmeans) or a checkpoint that every model reader loads back
    (``compress/format/quantized.py``); ``--json`` also writes the report."""
    from squeezelab.checkpoint import checkpoint_paths
    from squeezelab.compress.format.quantized import QUANTIZER_KEY, quantizer_record
    from squeezelab.compress.format.size_report import format_size_report, size_report
    from squeezelab.compress.format.sqz import save_compressed
    from squeezelab.compress.quantization.registry import quantize_
    from squeezelab.data.preprocess import META_KEYS, Preprocess
    from squeezelab.workflows.deep_compression import (
        evaluate_top1,
        load_compressible,
        save_compressible,
    )

    config = _quant_config(args)
    out = Path(args.output)
    sqz = out.suffix == ".sqz"
    if sqz and args.method != "kmeans":
        raise ValueError(f"a .sqz file holds a k-means weight-shared model; --method "
                         f"{args.method} writes a checkpoint: give -o a stem or a .json name, "
                         f"got {out}")
    if args.json_out and not sqz and Path(args.json_out).resolve() == checkpoint_paths(
            out)[0].resolve():
        raise ValueError(f"--json {args.json_out} is the output checkpoint's own JSON file; "
                         "choose another name")
    args.checkpoint = check_checkpoint(args.checkpoint)
    src = load_compressible(args.checkpoint)
    protocol = _protocol(args, src.meta)
    test, why = _test_data(args, src.meta, _train_section(args, src.meta))
    if test is None and args.method == "int8":
        raise ValueError(f"int8 calibrates its activation ranges on images, but {why}")
    before = after = None
    if test is not None:
        before = evaluate_top1(src.model, test, protocol)["top1"]
        print(f"before: top-1 {before:.4f} ({protocol.describe()}, {len(test)} test images)",
              flush=True)
    else:
        print(f"top-1 not measured: {why}")
    calibration = []
    if args.method == "int8":
        from squeezelab.data import BatchLoader

        loader = BatchLoader(test, 64, train=False, augment=None)
        loader.set_epoch(0)
        calibration = [b for _, b in zip(range(args.calibration_batches), loader)]
    print(f"quantizing with {type(config).__name__}: {config.to_dict()}", flush=True)
    report = quantize_(src.model, config, calibration)
    src.model.eval()
    if test is not None:
        after = evaluate_top1(src.model, test, protocol)["top1"]
        print(f"after:  top-1 {after:.4f} ({protocol.describe()}){_change(before, after)}")
    result: dict[str, Any] = {"checkpoint": args.checkpoint, "method": args.method,
                              "config": config.to_dict(), "top1_before": before,
                              "top1_after": after, "protocol": protocol.to_dict(),
                              "layers": report}
    q_bytes, f_bytes = _report_bytes(report)
    if q_bytes is not None:
        result["size_bytes"], result["fp32_bytes"] = q_bytes, f_bytes
        print(f"quantized layers: {q_bytes:,.0f} bytes vs {f_bytes:,.0f} fp32 "
              f"({f_bytes / max(q_bytes, 1):.1f}x)")
    # how inputs are prepared: the source's record (older files: the images scored here)
    meta = {k: src.meta[k] for k in ("config", "class_names", *META_KEYS) if k in src.meta}
    if "mean" not in meta and test is not None:
        meta.update(Preprocess.from_data(test).to_meta())
    if sqz:
        save_compressed(src.model, out, class_names=src.meta.get("class_names"),
                        meta={**meta, "quantize": result})
        rep = size_report(out)
        print(format_size_report(rep))
        result["size"] = dict(rep.totals)
        print(f"wrote {out} ({out.stat().st_size:,} bytes, "
              f"{rep.totals['ratio_fp32']:.1f}x smaller than fp32)")
        path = out
    else:
        meta[QUANTIZER_KEY] = quantizer_record(config, report, args.method)
        meta["quantize"] = {k: v for k, v in result.items() if k != "layers"}
        path = save_compressible(out, src.model, meta=meta)
        print(f"wrote {path} (a checkpoint of the quantized model: squeezelab eval and "
              "load_model read it back)")
    result["output"] = str(path)
    _write_json(args, result)
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


def prune_channels(args: argparse.Namespace) -> int:
    """``prune --channels``: the channel-pruning workflow
    (``workflows/channel_pruning.py``: cut, fine-tune, measure, save), then its figures."""
    from squeezelab.workflows.channel_pruning import ChannelPruneConfig
    from squeezelab.workflows.channel_pruning import prune_channels as run_channel_pruning
    from squeezelab.workflows.deep_compression import load_compressible

    fraction = _channel_selection(args.channels)
    if args.sparsity is not None or args.rule:
        raise ValueError("--channels removes whole channels; --sparsity/--rule prune single "
                         "weights: give one or the other")
    args.checkpoint = check_checkpoint(args.checkpoint)
    src = load_compressible(args.checkpoint)
    print(f"loaded {args.checkpoint}", flush=True)
    train_section = _train_section(args, src.meta)
    config = ChannelPruneConfig(fraction=fraction, score=args.channel_score,
                                dead_eps=args.dead_eps, retrain_epochs=args.retrain_epochs,
                                retrain_lr=args.retrain_lr, train=train_section)
    train = why = None
    if args.retrain_epochs:
        train, test = _load_data(train_section)
        _check_classes(src.meta, test, args.checkpoint)
    else:
        test, why = _test_data(args, src.meta, train_section)
    protocol = _protocol(args, src.meta)
    result = run_channel_pruning(src, args.output, config, (train, test), protocol=protocol,
                                 work_dir=args.work_dir, source_name=args.checkpoint)
    before, after = result.before, result.after
    if before["top1"] is None:
        print(f"top-1 not measured: {why}")
    else:
        print(f"before: top-1 {before['top1']:.4f} ({protocol.describe()}, {len(test)} test "
              "images)")
        print(f"after:  top-1 {after['top1']:.4f} ({protocol.describe()})"
              f"{_change(before['top1'], after['top1'])}")
    print(f"parameters {before['parameters']:,} -> {after['parameters']:,}; MACs "
          f"{before['macs'] / 1e6:.1f}M -> {after['macs'] / 1e6:.1f}M; CPU fp32 batch 64 "
          f"{before['images_per_s']:.0f} -> {after['images_per_s']:.0f} img/s "
          f"({after['images_per_s'] / before['images_per_s']:.2f}x)")
    print(f"wrote {result.path} ({result.model.spec['name']} with fire_config "
          f"{[list(f) for f in result.report.fire_config]})")
    if result.run_dir is not None:
        print(f"fine-tuning run: {result.run_dir}")
    _write_json(args, {"output": str(result.path), "channels": args.channels,
                       **result.to_dict()})
    return 0


def prune_fire_layers(args: argparse.Namespace) -> int:
    """``prune --drop-fires N``: the layer-pruning workflow (``workflows/layer_pruning.py``:
    choose on training images, drop, fine-tune, measure, save), then its figures."""
    from squeezelab.workflows.deep_compression import load_compressible
    from squeezelab.workflows.layer_pruning import LayerPruneConfig, prune_fires

    if args.sparsity is not None or args.rule or args.quality is not None:
        raise ValueError("--drop-fires removes whole Fire modules; --sparsity/--quality/--rule "
                         "prune single weights: give one or the other")
    args.checkpoint = check_checkpoint(args.checkpoint)
    src = load_compressible(args.checkpoint)
    print(f"loaded {args.checkpoint}", flush=True)
    train_section = _train_section(args, src.meta)
    config = LayerPruneConfig(num_fires=args.drop_fires, selection_images=args.selection_images,
                              retrain_epochs=args.retrain_epochs, retrain_lr=args.retrain_lr,
                              train=train_section)
    train, test = _load_data(train_section)
    _check_classes(src.meta, test, args.checkpoint)
    protocol = _protocol(args, src.meta)
    result = prune_fires(src, args.output, config, (train, test), protocol=protocol,
                         work_dir=args.work_dir)
    before, after = result.before, result.after
    print(f"before: top-1 {before['top1']:.4f} ({protocol.describe()}, {len(test)} test images)")
    print(f"after:  top-1 {after['top1']:.4f} ({protocol.describe()})"
          f"{_change(before['top1'], after['top1'])}")
    print(f"parameters {before['parameters']:,} -> {after['parameters']:,}; MACs "
          f"{before['macs'] / 1e6:.1f}M -> {after['macs'] / 1e6:.1f}M; wrote {result.path} "
          f"(skip_fires {result.meta['layer_prune']['skip_fires']})")
    _write_json(args, {"output": str(result.path), **result.meta["layer_prune"]})
    return 0


def cmd_learn_arch(args: argparse.Namespace) -> int:
    """``learn-arch``: the architecture-learning workflow
    (``workflows/architecture_learning.py``), then the learned widths and figures."""
    from squeezelab.compress.pruning.architecture import widths_table
    from squeezelab.workflows.architecture_learning import (
        ArchitectureLearningConfig,
        learn_architecture,
    )
    from squeezelab.workflows.deep_compression import load_compressible

    args.checkpoint = check_checkpoint(args.checkpoint)
    src = load_compressible(args.checkpoint)
    print(f"loaded {args.checkpoint}", flush=True)
    train_section = _train_section(args, src.meta)
    values = {k: getattr(args, k) for k in (
        "learn_epochs", "learn_lr", "width_binarize", "depth_binarize", "width_count", "cost",
        "learn_depth", "gate_lr", "freeze_scales", "binarize_ramp", "threshold",
        "finetune_epochs",
        "finetune_lr")
        if getattr(args, k) is not None}
    config = ArchitectureLearningConfig.from_dict({**values, "train": train_section},
                                                  source="learn-arch flags")
    train, test = _load_data(train_section)
    _check_classes(src.meta, test, args.checkpoint)
    protocol = _protocol(args, src.meta)
    result = learn_architecture(src, args.output, config, (train, test), protocol=protocol,
                                work_dir=args.work_dir)
    print(widths_table(result.report))
    for label, m in (("before", result.before), ("learned (gates as trained)", result.gated),
                     ("cut, not fine-tuned", result.cut), ("after", result.after)):
        print(f"{label + ':':<28} top-1 {m['top1']:.4f} ({protocol.describe()}), "
              f"{m['parameters']:,} parameters, {m['macs'] / 1e6:.1f}M MACs")
    removed = 1 - result.after["parameters"] / result.before["parameters"]
    print(f"{100 * removed:.1f}% of the parameters removed"
          f"{_change(result.before['top1'], result.after['top1'])}; wrote {result.path}")
    _write_json(args, {"output": str(result.path), **result.to_dict()})
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
    from squeezelab.train.evaluate import EvalProtocol
    from squeezelab.workflows.deep_compression import compress

    out = Path(args.output)
    if out.suffix != ".sqz":
        raise ValueError(f"-o must name a .sqz file, got {args.output!r}")
    args.checkpoint = check_checkpoint(args.checkpoint)
    config = _compress_config(args, args.checkpoint)
    print("config: " + json.dumps(config.to_dict()), flush=True)
    # compress() loads the data config.train names and checks its classes against the
    # checkpoint's, exactly as for every other caller (the benchmark): same config, same file
    # --test-time-flip, else compress() scores as the checkpoint was trained (_protocol's rule)
    given = None if args.test_time_flip is None else EvalProtocol(flip=args.test_time_flip)
    result = compress(args.checkpoint, config, out, work_dir=args.work_dir, protocol=given)
    protocol = EvalProtocol.from_dict(result.summary["protocol"])
    print()
    print(f"{'step':<12} {'top-1':>7} {'sparsity':>9}   (top-1: {protocol.describe()})")
    for s in result.steps:
        print(f"{s['step']:<12} {s.get('top1', float('nan')):>7.4f} {s['sparsity']:>9.4f}")
    size = result.size
    print(f"{out}: {size['file_bytes']:,} bytes, {size['ratio_fp32']:.1f}x smaller than fp32; "
          f"top-1 {result.steps[0]['top1']:.4f} -> {result.steps[-1]['top1']:.4f} "
          f"({protocol.describe()})")
    if result.summary.get("work_dir"):
        print(f"fine-tuning runs: {result.summary['work_dir']}")
    return 0
