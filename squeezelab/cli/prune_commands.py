"""``squeezelab prune | sensitivity | learn-arch``: magnitude, threshold, channel and layer
pruning (Han et al., arXiv 1506.02626; channel removal; whole Fire modules), per-layer
sensitivity, and architecture learning (Srinivas & Babu, arXiv 1511.05497).

Thin commands: each parses flags into the library's typed configs, calls one workflow and
prints what it measured before and after; errors about bad input are the library's (exit 2).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from squeezelab.cli import DefaultsHelpFormatter, check_checkpoint, parse_bool
from squeezelab.cli.compress_common import (
    CHECKPOINT_HELP,
    add_data_flags,
    check_classes,
    eval_protocol_for,
    format_change,
    layer_rules,
    load_data,
    scoring_data,
    train_section_from_flags,
    write_json_record,
)
from squeezelab.compress.pruning.magnitude import GRANULARITIES


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
    p.add_argument("--granularity", choices=GRANULARITIES, default="element",
                   help="element: each weight on its own; kernel: whole k x k kernels of each "
                   "conv (1x1 layers by element)")
    p.add_argument("--rounds", type=int, default=1, help="prune -> retrain rounds")
    p.add_argument("--retrain-epochs", type=int, default=0, help="retraining per round")
    p.add_argument("--retrain-lr", type=float, default=0.01)
    p.add_argument("--distill", metavar="SPEC", default=None,
                   help="the retraining / fine-tuning also learns from a teacher's outputs: "
                   "'dense' (the model before pruning or cutting) or T=4,alpha=0.9"
                   "[,mode=kd|logits][,teacher=CKPT]; needs --retrain-epochs")
    p.add_argument("--work-dir", default=None, help="where the retraining / fine-tuning runs "
                   "go (default: runs/<output stem>-prune, or -channels with --channels)")
    add_data_flags(p)
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
    add_data_flags(p)
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.set_defaults(func=cmd_sensitivity)

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
    p.add_argument("--min-width", type=float, default=None,
                   help="the floor: the fraction of each gated layer's channels always kept "
                   "(its widest-open gates; default 0.25, 0: none)")
    p.add_argument("--threshold", type=float, default=None, help="round gates here (0.5)")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="fine-tuning of the cut model (default 2; 0: none)")
    p.add_argument("--finetune-lr", type=float, default=None,
                   help="lr of the fine-tuning (default: the model's own)")
    p.add_argument("--work-dir", default=None, help="where the learn and finetune runs go "
                   "(default: runs/<output stem>-arch)")
    add_data_flags(p)
    p.add_argument("--json", dest="json_out", default=None,
                   help="also write the widths and every measurement here (with the command)")
    p.set_defaults(func=cmd_learn_arch)


def cmd_prune(args: argparse.Namespace) -> int:
    """``prune``: weight pruning (``workflows/weight_pruning.py``), or with ``--channels`` /
    ``--drop-fires`` channel or layer pruning; each prints top-1 before and after."""
    from squeezelab.checkpoint import checkpoint_paths
    from squeezelab.compress.pruning.magnitude import PruneConfig
    from squeezelab.workflows.deep_compression import CompressConfig, load_compressible
    from squeezelab.workflows.weight_pruning import prune_weights

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
    prune_cfg = PruneConfig(sparsity=args.sparsity, rules=layer_rules(args.rule),
                            scope=args.scope, exclude=args.exclude,
                            method="magnitude" if args.quality is None else "threshold",
                            quality=args.quality, granularity=args.granularity)
    args.checkpoint = check_checkpoint(args.checkpoint)
    src = load_compressible(args.checkpoint)
    print(f"loaded {args.checkpoint}", flush=True)
    train_section = train_section_from_flags(args, src.meta)
    cfg = CompressConfig(prune=prune_cfg, prune_rounds=args.rounds,
                         retrain_epochs=args.retrain_epochs, retrain_lr=args.retrain_lr,
                         sharing=None, train=train_section, distill=_distill(args))
    train = None
    if args.retrain_epochs:
        train, test = load_data(train_section)
        check_classes(src.meta, test, args.checkpoint)
    else:
        test, why = scoring_data(args, src.meta, train_section)
        if test is None:
            print(f"top-1 not measured: {why}")
    protocol = eval_protocol_for(args, src.meta)
    result = prune_weights(src, args.output, cfg, train=train, test=test, protocol=protocol,
                           work_dir=args.work_dir)
    for name, s in result.masks.layer_sparsity().items():
        print(f"  {name:<40} {100 * s:5.1f}% pruned")
    if result.after is not None:
        print(f"after:  top-1 {result.after:.4f} ({protocol.describe()})"
              f"{format_change(result.before, result.after)}")
    print(f"overall sparsity {result.masks.sparsity():.4f}; wrote {result.path}")
    if result.record["work_dir"]:
        print(f"retraining runs: {result.record['work_dir']}")
    write_json_record(args, {"output": str(result.path),
                             "sparsity": result.masks.sparsity(), **result.record})
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from squeezelab.compress.pruning.sensitivity import sensitivity_table
    from squeezelab.workflows.deep_compression import load_compressible
    from squeezelab.workflows.sensitivity import run_sensitivity

    for s in args.sparsities:
        if not 0 <= s < 1:
            raise ValueError(f"--sparsities must be in [0, 1), got {s}")
    args.checkpoint = check_checkpoint(args.checkpoint)
    src = load_compressible(args.checkpoint)
    _, test = load_data(train_section_from_flags(args, src.meta), need_train=False)
    check_classes(src.meta, test, args.checkpoint)
    protocol = eval_protocol_for(args, src.meta)
    print(f"pruning each layer of {args.checkpoint} alone at {args.sparsities}; top-1 scored "
          f"{protocol.describe()} on {len(test)} test images", flush=True)
    result = run_sensitivity(src.model, test, args.output, args.sparsities, args.max_drop,
                             protocol=protocol, progress=args.progress is not False)
    print(f"top-1 ({protocol.describe()}) with one layer pruned:")
    print(sensitivity_table(result.top1))
    print(f"wrote {result.png}, {result.json}, {result.suggested_json} "
          f"(max drop {args.max_drop})")
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


def _distill(args: argparse.Namespace):
    """--distill SPEC as the pruning workflows take it (None when not given)."""
    if args.distill is None:
        return None
    from squeezelab.workflows.fine_tuning import DENSE_TEACHER, FineTuningDistillConfig

    if not args.retrain_epochs:
        raise ValueError("--distill acts in the retraining: give --retrain-epochs too")
    spec = "" if args.distill.strip() == DENSE_TEACHER else args.distill
    return FineTuningDistillConfig.from_key_values(spec, "--distill")


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
    train_section = train_section_from_flags(args, src.meta)
    config = ChannelPruneConfig(fraction=fraction, score=args.channel_score,
                                dead_eps=args.dead_eps, retrain_epochs=args.retrain_epochs,
                                retrain_lr=args.retrain_lr, train=train_section,
                                distill=_distill(args))
    train = why = None
    if args.retrain_epochs:
        train, test = load_data(train_section)
        check_classes(src.meta, test, args.checkpoint)
    else:
        test, why = scoring_data(args, src.meta, train_section)
    protocol = eval_protocol_for(args, src.meta)
    result = run_channel_pruning(src, args.output, config, (train, test), protocol=protocol,
                                 work_dir=args.work_dir, source_name=args.checkpoint)
    before, after = result.before, result.after
    if before["top1"] is None:
        print(f"top-1 not measured: {why}")
    else:
        print(f"before: top-1 {before['top1']:.4f} ({protocol.describe()}, {len(test)} test "
              "images)")
        print(f"after:  top-1 {after['top1']:.4f} ({protocol.describe()})"
              f"{format_change(before['top1'], after['top1'])}")
    print(f"parameters {before['parameters']:,} -> {after['parameters']:,}; MACs "
          f"{before['macs'] / 1e6:.1f}M -> {after['macs'] / 1e6:.1f}M; CPU fp32 batch 64 "
          f"{before['images_per_s']:.0f} -> {after['images_per_s']:.0f} img/s "
          f"({after['images_per_s'] / before['images_per_s']:.2f}x)")
    print(f"wrote {result.path} ({result.model.spec['name']} with fire_config "
          f"{[list(f) for f in result.report.fire_config]})")
    if result.run_dir is not None:
        print(f"fine-tuning run: {result.run_dir}")
    write_json_record(args, {"output": str(result.path), "channels": args.channels,
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
    train_section = train_section_from_flags(args, src.meta)
    config = LayerPruneConfig(num_fires=args.drop_fires, selection_images=args.selection_images,
                              retrain_epochs=args.retrain_epochs, retrain_lr=args.retrain_lr,
                              train=train_section, distill=_distill(args))
    train, test = load_data(train_section)
    check_classes(src.meta, test, args.checkpoint)
    protocol = eval_protocol_for(args, src.meta)
    result = prune_fires(src, args.output, config, (train, test), protocol=protocol,
                         work_dir=args.work_dir)
    before, after = result.before, result.after
    print(f"before: top-1 {before['top1']:.4f} ({protocol.describe()}, {len(test)} test images)")
    print(f"after:  top-1 {after['top1']:.4f} ({protocol.describe()})"
          f"{format_change(before['top1'], after['top1'])}")
    print(f"parameters {before['parameters']:,} -> {after['parameters']:,}; MACs "
          f"{before['macs'] / 1e6:.1f}M -> {after['macs'] / 1e6:.1f}M; wrote {result.path} "
          f"(skip_fires {result.meta['layer_prune']['skip_fires']})")
    write_json_record(args, {"output": str(result.path), **result.meta["layer_prune"]})
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
    train_section = train_section_from_flags(args, src.meta)
    values = {k: getattr(args, k) for k in (
        "learn_epochs", "learn_lr", "width_binarize", "depth_binarize", "width_count", "cost",
        "learn_depth", "gate_lr", "freeze_scales", "binarize_ramp", "min_width", "threshold",
        "finetune_epochs",
        "finetune_lr")
        if getattr(args, k) is not None}
    config = ArchitectureLearningConfig.from_dict({**values, "train": train_section},
                                                  source="learn-arch flags")
    train, test = load_data(train_section)
    check_classes(src.meta, test, args.checkpoint)
    protocol = eval_protocol_for(args, src.meta)
    result = learn_architecture(src, args.output, config, (train, test), protocol=protocol,
                                work_dir=args.work_dir)
    print(widths_table(result.report))
    for label, m in (("before", result.before), ("learned (gates as trained)", result.gated),
                     ("cut, not fine-tuned", result.cut), ("after", result.after)):
        print(f"{label + ':':<28} top-1 {m['top1']:.4f} ({protocol.describe()}), "
              f"{m['parameters']:,} parameters, {m['macs'] / 1e6:.1f}M MACs")
    removed = 1 - result.after["parameters"] / result.before["parameters"]
    print(f"{100 * removed:.1f}% of the parameters removed"
          f"{format_change(result.before['top1'], result.after['top1'])}; wrote {result.path}")
    write_json_record(args, {"output": str(result.path), **result.to_dict()})
    return 0


#: compress flags that set the CompressConfig field of the same name
