"""``squeezelab models`` and ``squeezelab info MODEL``."""
from __future__ import annotations

import argparse

from squeezelab.cli.config_flags import add_model_arg_flag, model_args_from
from squeezelab.metrics import count_macs, format_layer_table, human, layer_table
from squeezelab.models import create_model, get_entry, list_models


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'squeezenet*'")
    p.add_argument("--counts", action="store_true", help="also build each model to count "
                   "parameters and MACs at its default input size")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="parameters, MACs and a per-layer table of a model")
    p.add_argument("model")
    p.add_argument("--input-size", type=int, default=None,
                   help="square input size in pixels (default: the model's own)")
    p.add_argument("--num-classes", type=int, default=None)
    add_model_arg_flag(p)  # size a variant before training it, as train --model-arg builds it
    p.set_defaults(func=cmd_info)


def cmd_models(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    width = max(map(len, names), default=10)
    for name in names:
        entry = get_entry(name)
        line = f"{name:<{width}}  {entry.default_input_size:>3}px  {entry.description}"
        if args.counts:
            model = create_model(name)
            params = sum(p.numel() for p in model.parameters())
            macs = count_macs(model, entry.default_input_size)
            line = (f"{name:<{width}}  {entry.default_input_size:>3}px  {params:>11,} params  "
                    f"{human(macs):>7} MACs  {entry.description}")
        print(line)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    entry = get_entry(args.model)
    size = args.input_size or entry.default_input_size
    model = create_model(args.model, num_classes=args.num_classes, **model_args_from(args))
    rows = layer_table(model, size)
    params = sum(p.numel() for p in model.parameters())
    macs = sum(r.macs for r in rows)
    print(f"{args.model}: {entry.description}")
    print(format_layer_table(rows))
    print(f"\n{params:,} parameters, {human(macs)} MACs at {size}x{size}, "
          f"{4 * params / 1e6:.2f} MB as fp32 ({4 * params / 2**20:.2f} MiB)")
    return 0
