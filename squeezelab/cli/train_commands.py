"""``squeezelab train``, ``squeezelab eval`` and ``squeezelab plot``.

Every TrainConfig field is a flag (``batch_size`` -> ``--batch-size``), so any recipe value
can be overridden from the command line: ``squeezelab train recipes/cifar10_fast.yaml
--epochs 3``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import yaml

from squeezelab.cli import DefaultsHelpFormatter
from squeezelab.train.config import FIELD_HELP, TrainConfig


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_yaml_value(text: str) -> Any:
    return yaml.safe_load(text)


def _field_type(field: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(TrainConfig)
    hint = hints[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    if base is bool:
        return _parse_bool
    if base in (int, float, str):
        return base
    return _parse_yaml_value


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; defaults are None so only given flags override."""
    group = parser.add_argument_group("training config (override a recipe's values)")
    for field in dataclasses.fields(TrainConfig):
        if field.name == "model_args":
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else None
        parse = _field_type(field)
        group.add_argument(flag, dest=f"cfg_{field.name}", type=parse, default=None,
                           metavar="BOOL" if parse is _parse_bool else field.name.upper(),
                           help=FIELD_HELP[field.name] if default is None
                           else f"{FIELD_HELP[field.name]} (default: {default})")
    group.add_argument("--model-arg", dest="model_args", action="append", default=[],
                       metavar="KEY=VALUE", help="model constructor override, e.g. "
                       "--model-arg batch_norm=true (repeatable; values parsed as YAML)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    model_args = {}
    for item in args.model_args:
        if "=" not in item:
            raise ValueError(f"--model-arg expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        model_args[key] = _parse_yaml_value(value)
    if args.recipe:
        cfg = TrainConfig.from_yaml(args.recipe, overrides)
    else:
        cfg = TrainConfig.from_dict(overrides, source="command line")
    if model_args:
        cfg = cfg.replace(model_args={**cfg.model_args, **model_args})
    return cfg


MODEL_PATH_HELP = ("checkpoint (.json/.safetensors or stem), a run directory (uses its best "
                   "checkpoint) or a .sqz file")


def add_eval_data_flags(p: argparse.ArgumentParser, default_data: str) -> None:
    """The flags that choose the images a model is scored on, and how (eval and compare)."""
    p.add_argument("--data", default=None, help=f"cifar10 | cifar100 | class-folder root "
                   f"(default: {default_data})")
    p.add_argument("--split", default="test")
    p.add_argument("--data-root", default=None)
    p.add_argument("--limit", type=int, default=None, help="evaluate a balanced subset")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--test-time-flip", type=_parse_bool, default=None, metavar="BOOL",
                   help="average the logits of each image and its mirror (default: as the "
                   "model was trained, so the figure matches the run's)")
    p.add_argument("--json", dest="json_out", default=None, help="also write results here")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (from a recipe and/or flags)",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("recipe", nargs="?", help="YAML recipe (recipes/*.yaml); flags override it")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its "
                   "last checkpoint (its saved config is used; flags override it)")
    p.add_argument("--nproc", type=int, default=1, help="processes: >1 launches torchrun "
                   "with DistributedDataParallel")
    p.add_argument("--distill", metavar="SPEC", default=None, help="knowledge distillation: "
                   "teacher=CKPT,T=4,alpha=0.9[,mode=kd|logits] (or a recipe's distill: section)")
    p.add_argument("--fitnets", metavar="SPEC", default=None, help="FitNets: teacher=CKPT,"
                   "hint=layer3,guided=features.6,stage1_epochs=N (or a recipe's fitnets:)")
    p.add_argument("--dsd", metavar="OPTIONS", default=None, help="dense-sparse-dense "
                   "training, e.g. sparsity=0.4,epochs=5-3-5 (overrides a recipe's dsd: section)")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="top-1/top-5 and per-class accuracy of a checkpoint or .sqz")
    p.add_argument("checkpoint", help=MODEL_PATH_HELP)
    add_eval_data_flags(p, "the data the model was trained on, else CIFAR-10")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="paired top-1 of two models on the same images: is B "
                       "better than A, by more than the luck of the images drawn?")
    p.add_argument("baseline", metavar="A", help=MODEL_PATH_HELP)
    p.add_argument("candidate", metavar="B", help="the model compared with A (same forms)")
    add_eval_data_flags(p, "the data A was trained on, else CIFAR-10")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("plot", help="train/test curves of one or more runs as a PNG")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("-o", "--output", default="curves.png")
    p.set_defaults(func=cmd_plot)


def cmd_train(args: argparse.Namespace) -> int:
    from squeezelab.cli.method_commands import train_with_methods

    if args.nproc > 1:
        from squeezelab.train.launch import launch_torchrun

        return launch_torchrun(args.nproc)
    if (args.distill or args.fitnets or _recipe_has(args, "distill", "fitnets")) \
            and not args.resume:
        return cmd_train_distill(args)
    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"cannot resume: {saved} does not exist")
        overrides = {k[4:]: v for k, v in vars(args).items()
                     if k.startswith("cfg_") and v is not None}
        cfg = TrainConfig.from_yaml(saved, overrides)
        result = train_with_methods(args, cfg, resume=True, run_dir=run_dir)
    else:
        cfg = config_from_args(args)
        result = train_with_methods(args, cfg)
    return report_run(result)


def report_run(result, what: str = "") -> int:
    """Print where a finished run is and its final test accuracy (rank 0 only: under torchrun
    every rank returns a result); the exit status: 130 when the run was interrupted."""
    if result.interrupted:
        return 130
    if not result.is_main:
        return 0
    print(f"run: {result.run_dir}")
    final = result.final
    if "test_top1" in final:
        top5 = f", top-5 {final['test_top5']:.4f}" if "test_top5" in final else ""
        print(f"final test top-1 {final['test_top1']:.4f}{top5}{what}")
    return 0


def _recipe_has(args: argparse.Namespace, *sections: str) -> bool:
    from squeezelab.train.config import load_recipe_sections

    return bool(args.recipe) and any(k in load_recipe_sections(args.recipe) for k in sections)


def cmd_train_distill(args: argparse.Namespace) -> int:
    """``train --distill`` / ``--fitnets`` (or a recipe's distill: / fitnets: section). The
    teacher is loaded before training starts, so a missing checkpoint fails at once."""
    from squeezelab.train.config import load_recipe_sections
    from squeezelab.train.distill import DistillConfig, DistillError, DistillHook
    from squeezelab.train.fitnets import FitNetsConfig, fitnets_train
    from squeezelab.train.loop import train

    if getattr(args, "dsd", None) or _recipe_has(args, "dsd"):
        raise DistillError("DSD with distillation is not offered on the command line; combine "
                           "DSDHook and DistillHook through the library's train(hooks=[...])")
    sections = load_recipe_sections(args.recipe) if args.recipe else {}
    distill = (DistillConfig.parse(args.distill) if args.distill else
               DistillConfig.from_dict(sections["distill"]) if "distill" in sections else None)
    fitnets = (FitNetsConfig.parse(args.fitnets) if args.fitnets else
               FitNetsConfig.from_dict(sections["fitnets"]) if "fitnets" in sections else None)
    if distill is not None and fitnets is not None:
        raise DistillError("choose one of distillation (--distill / distill:) and FitNets "
                           "(--fitnets / fitnets:), not both: FitNets' stage 2 is KD already")
    cfg = config_from_args(args)
    if fitnets is not None:
        result = fitnets_train(cfg, fitnets)[1]
    else:
        result = train(cfg, [DistillHook(distill)])
    return report_run(result)


def load_any_model(path: str):
    """(model, meta) from a checkpoint, a run directory or a .sqz file."""
    p = Path(path)
    if p.suffix == ".sqz":
        from squeezelab.compress.sqz import load_compressed

        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist")
        model = load_compressed(p)
        # the header carries the spec and class names; its meta holds the compression record
        header = model.sqz_header
        meta = header.get("meta", {})
        # "config" (the data the model was fine-tuned on) comes from the compression record
        train_cfg = (meta.get("compress_config") or {}).get("train") or {}
        return model, {**meta, "config": meta.get("config") or train_cfg,
                       "model": header["model"], "class_names": header.get("class_names")}
    from squeezelab.checkpoint import resolve_checkpoint
    from squeezelab.compress.pipeline import load_compressible

    p = resolve_checkpoint(p)
    # load_compressible also rebuilds weight-shared checkpoints (plain ones load as before)
    loaded = load_compressible(p)
    return loaded.model, loaded.meta


def eval_data(args: argparse.Namespace, meta: dict):
    """The split ``args`` names, from ``--data`` or else the data the model was trained on."""
    from squeezelab.data import load_split, resolve_default_cifar10

    trained_on = (meta.get("config") or {}).get("data")
    source = args.data or trained_on or resolve_default_cifar10()
    return source, load_split(source, args.split, root=args.data_root, limit=args.limit)


def check_model_fits(path: str, meta: dict, source: str, data) -> None:
    """A model must predict the data's classes, in the data's order, to be scored on it."""
    num_classes = model_spec_classes(meta)
    if num_classes is not None and num_classes != data.num_classes:
        raise ValueError(f"{path} is a {num_classes}-class model, but {source} "
                         f"has {data.num_classes} classes")
    saved_names = meta.get("class_names")
    if saved_names and list(saved_names) != list(data.classes):
        raise ValueError(f"{path} was trained on classes {saved_names}, but "
                         f"{source} has {data.classes}")


def eval_flip(args: argparse.Namespace, meta: dict) -> bool:
    """--test-time-flip if given, else as the model was trained (so figures match its run's)."""
    if args.test_time_flip is not None:
        return args.test_time_flip
    return bool((meta.get("config") or {}).get("test_time_flip", False))


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from squeezelab.data import BatchLoader
    from squeezelab.train.evaluate import evaluate

    model, meta = load_any_model(args.checkpoint)
    source, data = eval_data(args, meta)
    check_model_fits(args.checkpoint, meta, source, data)
    loader = BatchLoader(data, args.batch_size, train=False, augment=None)
    loader.set_epoch(0)
    flip = eval_flip(args, meta)
    result = evaluate(model, loader, data.num_classes, torch.device("cpu"), args.precision,
                      test_time_flip=flip)
    print(f"{args.checkpoint} on {source} [{args.split}, {result['count']} images"
          f"{', flip-averaged' if flip else ''}]")
    print(f"top-1 {result['top1']:.4f}   top-5 {result['top5']:.4f}   loss {result['loss']:.4f}")
    width = max(len(c) for c in data.classes)
    for name, acc in zip(data.classes, result["per_class"]):
        print(f"  {name:<{width}}  {acc:.4f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"checkpoint": args.checkpoint, "data": str(source), "split": args.split,
             **result, "classes": data.classes}, indent=2))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Both models scored on the same images: only the images one gets right and the other
    wrong move the difference, so its error bar is far tighter than either accuracy's."""
    import torch

    from squeezelab.data import BatchLoader
    from squeezelab.train.evaluate import paired_difference, top1_correct

    models = {"A": load_any_model(args.baseline), "B": load_any_model(args.candidate)}
    paths = {"A": args.baseline, "B": args.candidate}
    source, data = eval_data(args, models["A"][1])
    for key, (_, meta) in models.items():
        check_model_fits(paths[key], meta, source, data)
    loader = BatchLoader(data, args.batch_size, train=False, augment=None)
    hits = {}
    for key, (model, meta) in models.items():
        loader.set_epoch(0)
        hits[key] = top1_correct(model, loader, torch.device("cpu"), args.precision,
                                 test_time_flip=eval_flip(args, meta))
    top1 = {key: hit.double().mean().item() for key, hit in hits.items()}
    paired = paired_difference(hits["B"], hits["A"])
    diff, se = paired["difference"], paired["image_se"]
    low, high = diff - 1.96 * se, diff + 1.96 * se
    print(f"on {source} [{args.split}, {len(data)} images]")
    for key in ("A", "B"):
        print(f"  {key}  top-1 {top1[key]:.4f}  {paths[key]}")
    print(f"B - A  {100 * diff:+.2f} points, 95% interval {100 * low:+.2f} to {100 * high:+.2f}"
          f"  (only B right on {paired['gained'][0]} images, only A on {paired['lost'][0]})")
    if paired["gained"][0] + paired["lost"][0] == 0:
        verdict = "the two models are right on exactly the same images"
    elif low > 0 or high < 0:
        verdict = f"{'B' if diff > 0 else 'A'} is better on these images beyond sampling luck"
    else:
        verdict = "no difference beyond the luck of which images were drawn"
    print(verdict)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"baseline": args.baseline, "candidate": args.candidate, "data": str(source),
             "split": args.split, "images": len(data),
             "baseline_top1": top1["A"], "candidate_top1": top1["B"],
             "candidate_minus_baseline": diff, "image_se": se, "interval_95": [low, high],
             "only_candidate_correct": paired["gained"][0],
             "only_baseline_correct": paired["lost"][0]}, indent=2))
    return 0


def model_spec_classes(meta: dict) -> int | None:
    spec = meta.get("model") or {}
    return (spec.get("kwargs") or {}).get("num_classes")


def cmd_plot(args: argparse.Namespace) -> int:
    from squeezelab.plots import plot_runs

    out = plot_runs(args.run_dirs, args.output)
    print(f"wrote {out}")
    return 0
