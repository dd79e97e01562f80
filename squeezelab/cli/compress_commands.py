"""``squeezelab quantize | compress``: any registered quantizer on a checkpoint, and the whole
Deep Compression pipeline (Han et al., arXiv 1510.00149) to a .sqz file.

Thin commands over ``squeezelab.compress`` and ``squeezelab.workflows.deep_compression``: they
parse flags into the library's typed configs, print what they do step by step, and leave every
error about bad input to the library (a ValueError: exit status 2).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from squeezelab.cli import DefaultsHelpFormatter, check_checkpoint
from squeezelab.cli.compress_common import (
    CHECKPOINT_HELP,
    _add_data_flags,
    _change,
    _data_overrides,
    _protocol,
    _rules,
    _test_data,
    _train_section,
    _write_json,
)


def add_commands(sub: argparse._SubParsersAction) -> None:
    fmt = DefaultsHelpFormatter

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
    p.add_argument("--entropy-weight", type=float, default=None,
                   help="price clusters by rate too (entropy-constrained sharing): lower "
                   "index entropy, a smaller file; 0 is the paper's k-means (e.g. 0.02)")
    p.add_argument("--centroid-epochs", type=int, default=None)
    p.add_argument("--centroid-lr", type=float, default=None)
    p.add_argument("--gap-bits", type=int, default=None)
    p.add_argument("--fold-batchnorm", action="store_true", default=None,
                   help="fold BatchNorm into the convs after pruning (smaller file)")
    p.add_argument("--coder", choices=("auto", "ans", "huffman"), default=None,
                   help="entropy coder of the file's streams (default auto: per layer, the "
                   "smaller of rANS and the paper's Huffman)")
    p.add_argument("--float-dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="precision of the floats the file stores (biases, BatchNorm, "
                   "codebooks); the reported top-1 is scored after rounding to it")
    p.add_argument("--int8-calibration", type=int, default=None, metavar="IMAGES",
                   help="measure activation ranges on this many training images and store them "
                   "in the file, so that it runs as int8 (eval --int8; e.g. 512)")
    p.add_argument("--dense-bits", type=int, default=None,
                   help="store biases and BatchNorm tensors as uniform levels of this many "
                   "bits (e.g. 8); the reported top-1 is scored after rounding to them")
    p.add_argument("--optimizer", default=None)
    p.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16"))
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--work-dir", default=None, help="where the fine-tuning runs go (default: "
                   "runs/<output stem>-compress; announced at the start and the end)")
    _add_data_flags(p)
    p.set_defaults(func=cmd_compress)


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


_COMPRESS_FLAGS = ("prune_rounds", "prune_schedule", "retrain_epochs", "retrain_lr",
                   "centroid_epochs", "centroid_lr", "gap_bits", "fold_batchnorm",
                   "coder", "float_dtype", "dense_bits", "int8_calibration")


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
    sharing = {k: v for k, v in (("bits", bits or None), ("entropy_weight", args.entropy_weight))
               if v is not None}
    if args.no_share:
        out["sharing"] = None
    elif sharing:
        out["sharing"] = sharing
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
