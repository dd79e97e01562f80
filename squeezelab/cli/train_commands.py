"""``squeezelab train`` and ``squeezelab plot``.

Every TrainConfig field is a flag (``batch_size`` -> ``--batch-size``), so any recipe value
can be overridden from the command line: ``squeezelab train recipes/cifar10_fast.yaml
--epochs 3``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from squeezelab.cli import DefaultsHelpFormatter
from squeezelab.cli.config_flags import (
    add_config_flags,
    config_from_args,
    config_overrides,
    report_run,
)
from squeezelab.train.config import ConfigError, TrainConfig


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (from a recipe and/or flags)",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("recipe", nargs="?", help="YAML recipe (recipes/*.yaml); flags override it")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its "
                   "last checkpoint (its saved config is used; flags override it). --epochs N "
                   "extends a finished run; flags that change its images or scoring "
                   "(--data, --limit-train, --limit-test, --seed, ...) are refused")
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

    p = sub.add_parser("plot", help="train/test curves of one or more runs as a PNG",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run folders (runs/NAME), drawn side by side")
    p.add_argument("-o", "--output", default="curves.png", help="the PNG written")
    p.add_argument("--x", choices=("epoch", "fraction", "hours"), default="epoch",
                   help="what the curves are drawn against: the epoch, the fraction of each "
                   "run's schedule (runs of different lengths line up), or the hours of each "
                   "run's own training and scoring")
    p.set_defaults(func=cmd_plot)


def cmd_train(args: argparse.Namespace) -> int:
    from squeezelab.cli.method_commands import train_with_methods

    if args.nproc > 1:
        from squeezelab.train.launch import launch_torchrun

        return launch_torchrun(args.nproc, args.argv)
    if (args.distill or args.fitnets or _recipe_has(args, "distill", "fitnets")) \
            and not args.resume:
        return cmd_train_distill(args)
    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"cannot resume: {saved} does not exist")
        if args.model_args:
            raise ConfigError(f"--model-arg cannot change the model of a resumed run "
                              f"({run_dir}); start a new run from its weights with "
                              f"--init-from {run_dir} --run-name NEW_NAME")
        overrides = config_overrides(args)
        # what the run may not change (its images, scoring) is refused by train() itself
        cfg = TrainConfig.from_yaml(saved, overrides)
        result = train_with_methods(args, cfg, resume=True, run_dir=run_dir,
                                    hooks=resumed_distillation(args, run_dir))
    else:
        cfg = config_from_args(args)
        result = train_with_methods(args, cfg)
    return report_run(result)


def _recipe_has(args: argparse.Namespace, *sections: str) -> bool:
    from squeezelab.train.config import load_recipe_sections

    return bool(args.recipe) and any(k in load_recipe_sections(args.recipe) for k in sections)


def resumed_distillation(args: argparse.Namespace, run_dir: Path) -> list:
    """The distillation hook a resumed run was trained with (its teacher and settings, from
    the run's last checkpoint), or none. ``--distill`` on a resume may only repeat them: a
    run that changed teacher half way would be neither run."""
    from squeezelab.train.distill import DistillConfig, DistillError, DistillHook
    from squeezelab.train.resume import saved_hook_states

    saved = saved_hook_states(run_dir).get(DistillHook.name)
    given = DistillConfig.parse(args.distill) if getattr(args, "distill", None) else None
    if saved is None:
        if given is not None:
            raise DistillError(f"cannot resume {run_dir} with --distill: it was trained "
                               "without distillation (start a new run from its weights with "
                               f"--init-from {run_dir} --run-name NEW_NAME)")
        return []
    config = DistillConfig.from_dict(saved, source=f"{run_dir}'s distillation settings")
    if given is not None and given != config:
        raise DistillError(f"cannot resume {run_dir} with --distill {args.distill}: it was "
                           f"trained with {config.to_dict()} (leave --distill out to go on "
                           "with those)")
    return [DistillHook(config)]


def cmd_train_distill(args: argparse.Namespace) -> int:
    """``train --distill`` / ``--fitnets`` (or a recipe's distill: / fitnets: section). The
    teacher is loaded before training starts, so a missing checkpoint fails at once."""
    from squeezelab.train.config import load_recipe_sections
    from squeezelab.train.distill import DistillConfig, DistillError, DistillHook
    from squeezelab.train.loop import train
    from squeezelab.workflows.fitnets import FitNetsConfig, fitnets_train

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


def cmd_plot(args: argparse.Namespace) -> int:
    from squeezelab.plots import plot_runs

    out = plot_runs(args.run_dirs, args.output, x=args.x)
    print(f"wrote {out}")
    return 0
