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
    add_data_flags,
    data_overrides,
    eval_protocol_for,
    format_change,
    layer_rules,
    scoring_data,
    train_section_from_flags,
    write_json_record,
)
from squeezelab.compress.pruning.magnitude import GRANULARITIES
from squeezelab.compress.pruning.schedules import PRUNE_SCHEDULES


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
    add_data_flags(p)
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
    p.add_argument("--prune-granularity", choices=GRANULARITIES, default=None,
                   help="element: each weight on its own; kernel: whole k x k kernels of each "
                   "conv (one position in the file for k*k weights; 1x1 layers by element)")
    p.add_argument("--no-prune", action="store_true", help="skip pruning")
    p.add_argument("--prune-rounds", type=int, default=None)
    p.add_argument("--prune-schedule", choices=PRUNE_SCHEDULES, default=None,
                   help="geometric or linear: prune -> retrain rounds; gradual: the same epochs "
                   "as one run, the sparsity rising along Zhu & Gupta's cubic curve")
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
    p.add_argument("--reassign-weights", action="store_true", default=None,
                   help="the centroid epochs also train each kept weight (straight-through) "
                   "and move it to its cheapest cluster every step, instead of keeping the "
                   "cluster the sharing gave it")
    p.add_argument("--gap-bits", type=int, default=None)
    p.add_argument("--fold-batchnorm", action="store_true", default=None,
                   help="fold BatchNorm into the convs after pruning (smaller file)")
    from squeezelab.compress.format.layout import CODER_CHOICES

    p.add_argument("--coder", choices=CODER_CHOICES, default=None,
                   help="entropy coder of the file's streams (default auto: per layer, the "
                   "smaller of rANS and the paper's Huffman; smallest: also tries the "
                   "adaptive coder, ~2%% fewer bytes, slower to load)")
    p.add_argument("--float-dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="precision of the floats the file stores (biases, BatchNorm, "
                   "codebooks); the reported top-1 is scored after rounding to it")
    p.add_argument("--int8-calibration", type=int, default=None, metavar="IMAGES",
                   help="measure activation ranges on this many training images and store them "
                   "in the file, so that it runs as int8 (eval --int8; e.g. 512)")
    p.add_argument("--dense-bits", type=int, default=None,
                   help="store biases and BatchNorm tensors as uniform levels of this many "
                   "bits (e.g. 8); the reported top-1 is scored after rounding to them")
    p.add_argument("--distill", metavar="SPEC", default=None,
                   help="every fine-tuning run also learns from a teacher's outputs: 'dense' "
                   "(the model being compressed, before pruning) or T=4,alpha=0.9"
                   "[,mode=kd|logits][,teacher=CKPT]")
    p.add_argument("--optimizer", default=None)
    p.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16"))
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--work-dir", default=None, help="where the fine-tuning runs go (default: "
                   "runs/<output stem>-compress; announced at the start and the end)")
    add_data_flags(p)
    p.set_defaults(func=cmd_compress)


def _quant_config(args: argparse.Namespace):
    """The ``--method``'s config, built by its registration in
    ``compress/quantization/registry.py`` from this command's options."""
    from squeezelab.compress.quantization.registry import QuantizeOptions, quantizer_config

    options = QuantizeOptions(bits=args.bits,
                              layer_bits=layer_rules(args.layer_bits, "--layer-bits"),
                              energy=args.energy, num_clusters=args.num_clusters,
                              subvector_dim=args.subvector_dim)
    return quantizer_config(args.method, options, what="--method")


def cmd_quantize(args: argparse.Namespace) -> int:
    """Quantize a checkpoint, score it before and after under one protocol and write the
    quantized model (``workflows/quantize_model.py``): a ``.sqz`` (kmeans) or a checkpoint
    that every model reader loads back; ``--json`` also writes the report."""
    from squeezelab.checkpoint import checkpoint_paths
    from squeezelab.workflows.deep_compression import load_compressible
    from squeezelab.workflows.quantize_model import CALIBRATED, check_output, quantize_model

    config = _quant_config(args)
    out = Path(args.output)
    if args.json_out and out.suffix != ".sqz" and Path(args.json_out).resolve() == \
            checkpoint_paths(out)[0].resolve():
        raise ValueError(f"--json {args.json_out} is the output checkpoint's own JSON file; "
                         "choose another name")
    check_output(out, args.method)
    args.checkpoint = check_checkpoint(args.checkpoint)
    src = load_compressible(args.checkpoint)
    protocol = eval_protocol_for(args, src.meta)
    test, why = scoring_data(args, src.meta, train_section_from_flags(args, src.meta))
    if test is None:
        if args.method in CALIBRATED:
            raise ValueError(f"{args.method} calibrates its activation ranges on images, but "
                             f"{why}")
        print(f"top-1 not measured: {why}")
    result = quantize_model(src, out, config, args.method, test=test, protocol=protocol,
                            calibration_batches=args.calibration_batches)
    record = {**result.record, "checkpoint": args.checkpoint}
    if result.after is not None:
        print(f"after:  top-1 {result.after:.4f} ({protocol.describe()})"
              f"{format_change(result.before, result.after)}")
    if "size_bytes" in record:
        q_bytes, f_bytes = record["size_bytes"], record["fp32_bytes"]
        print(f"quantized layers: {q_bytes:,.0f} bytes vs {f_bytes:,.0f} fp32 "
              f"({f_bytes / max(q_bytes, 1):.1f}x)")
    if "size" in record:
        print(f"wrote {result.path} ({result.path.stat().st_size:,} bytes, "
              f"{record['size']['ratio_fp32']:.1f}x smaller than fp32)")
    else:
        print(f"wrote {result.path} (a checkpoint of the quantized model: squeezelab eval and "
              "load_model read it back)")
    record["output"] = str(result.path)
    write_json_record(args, record)
    return 0


_COMPRESS_FLAGS = ("prune_rounds", "prune_schedule", "retrain_epochs", "retrain_lr",
                   "centroid_epochs", "centroid_lr", "reassign_weights", "gap_bits",
                   "fold_batchnorm", "coder", "float_dtype", "dense_bits", "int8_calibration")


def _compress_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The compress flags given, in CompressConfig's words (``compress_config_for``'s
    ``overrides``); a flag not given is left out, so the recipe's value stands."""
    out: dict[str, Any] = {k: getattr(args, k) for k in _COMPRESS_FLAGS
                           if getattr(args, k) is not None}
    prune = {"sparsity": args.sparsity, "scope": args.scope,
             "rules": layer_rules(args.rule) or None, "granularity": args.prune_granularity}
    prune = {k: v for k, v in prune.items() if v is not None}
    if args.no_prune:
        out["prune"] = None
    elif prune:
        out["prune"] = prune
    bits = {k: v for k, v in (("conv", args.conv_bits), ("classifier", args.classifier_bits))
            if v is not None}
    bits.update(layer_rules(args.layer_bits, "--layer-bits"))
    sharing = {k: v for k, v in (("bits", bits or None), ("entropy_weight", args.entropy_weight))
               if v is not None}
    if args.no_share:
        out["sharing"] = None
    elif sharing:
        out["sharing"] = sharing
    if args.distill is not None:
        from squeezelab.workflows.fine_tuning import DENSE_TEACHER, FineTuningDistillConfig

        spec = "" if args.distill.strip() == DENSE_TEACHER else args.distill
        out["distill"] = FineTuningDistillConfig.from_key_values(spec, "--distill").to_dict()
    train = {k: getattr(args, k) for k in ("optimizer", "precision", "seed")
             if getattr(args, k, None) is not None}
    out["train"] = {**data_overrides(args), **train}
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
    # --test-time-flip, else compress() scores as the checkpoint was trained (the rule of
    # eval_protocol_for)
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
