"""``squeezelab dsd`` and the training methods that the ``train`` command switches on.

``squeezelab train --dsd sparsity=0.4,epochs=5-3-5`` (or a recipe's ``dsd:`` section) trains
under dense-sparse-dense (Han et al. 2017, arXiv 1607.04381); ``squeezelab dsd CHECKPOINT
--sparsity 0.4 --epochs 3-5`` starts it from a trained dense model, skipping the dense phase.
Options are parsed before any data is loaded, so bad input fails at once.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from squeezelab.cli import DefaultsHelpFormatter
from squeezelab.cli.config_flags import (
    add_config_flags,
    config_from_args,
    config_overrides,
    report_run,
)
from squeezelab.hooks import TrainHook
from squeezelab.train.config import TrainConfig
from squeezelab.workflows.dsd import LR_SCHEDULES


def dsd_config_for(args: argparse.Namespace, run_dir: Path | None = None):
    """The DSD config of a ``train`` invocation, or None: ``--dsd`` wins over the recipe's
    ``dsd:`` section; on ``--resume`` the config saved in the run's checkpoint is used."""
    from squeezelab.train.config import load_recipe_sections
    from squeezelab.workflows.dsd import DSDConfig

    if getattr(args, "dsd", None):
        return DSDConfig.parse(args.dsd)
    recipe = getattr(args, "recipe", None)
    if recipe and not run_dir:
        section = load_recipe_sections(recipe).get("dsd")
        if section is not None:
            if not isinstance(section, dict):
                raise ValueError(f"{recipe}: the dsd: section must be a mapping, got "
                                 f"{section!r}")
            return DSDConfig.from_dict(section, source=f"{recipe} dsd:")
    if run_dir is not None:
        from squeezelab.train.resume import saved_hook_states

        saved = saved_hook_states(run_dir).get("dsd")
        if saved and saved.get("config"):
            return DSDConfig(**saved["config"])
    return None


def train_with_methods(args: argparse.Namespace, cfg: TrainConfig, *, resume: bool = False,
                       run_dir: Path | None = None, hooks: Sequence[TrainHook] = ()):
    """``train()`` with the methods the command line or recipe asks for (``--dsd``), and
    ``hooks`` (a resumed run's distillation)."""
    from squeezelab.train.loop import train

    dsd_cfg = dsd_config_for(args, run_dir if resume else None)
    if dsd_cfg is None:
        return train(cfg, hooks, resume=resume, run_dir=run_dir)
    from squeezelab.workflows.dsd import run_dsd

    given_epochs = getattr(args, "cfg_epochs", None)
    if given_epochs is not None and given_epochs != dsd_cfg.total_epochs:
        raise ValueError(f"--epochs {given_epochs} conflicts with the DSD schedule, which takes "
                         f"{dsd_cfg.total_epochs} epochs; drop --epochs or change --dsd epochs=")
    return run_dsd(cfg, dsd_cfg, hooks=hooks, resume=resume, run_dir=run_dir)


def add_commands(sub: argparse._SubParsersAction) -> None:
    # conflict_handler="resolve": this command's --epochs (SPARSE-REDENSE) replaces the
    # training config's integer --epochs, which DSD computes from the phases.
    p = sub.add_parser("dsd", help="dense-sparse-dense training from a trained dense model",
                       formatter_class=DefaultsHelpFormatter,
                       conflict_handler="resolve")
    add_config_flags(p)
    p.add_argument("checkpoint", help="trained dense checkpoint (.json/.safetensors or stem) "
                   "or a run directory (its best checkpoint)")
    p.add_argument("--sparsity", type=float, default=0.4,
                   help="fraction of each layer's weights pruned in the sparse phase")
    p.add_argument("--epochs", dest="dsd_epochs", default="3-5",
                   help="SPARSE-REDENSE epochs (per cycle)")
    p.add_argument("--cycles", type=int, default=1, help="sparse -> re-dense repetitions")
    p.add_argument("--redense-lr-factor", type=float, default=0.1,
                   help="re-dense learning rate as a fraction of the run's")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="phase",
                   help="phase: the recipe's schedule restarts in every phase; run: one "
                   "schedule over the run, scaled during re-dense; capped: one schedule over "
                   "the run, capped at the re-dense rate during re-dense")
    p.add_argument("--layers", action="append", default=[], metavar="LAYER",
                   help="layer type or glob to prune (repeatable), e.g. expand3x3; "
                   "default: every Conv2d/Linear weight")
    p.add_argument("--exclude", action="append", default=[], metavar="LAYER",
                   help="layer type or glob never pruned (repeatable), e.g. classifier")
    p.add_argument("--plot-layer", default=None, help="parameter whose weight histogram is "
                   "plotted per phase (default: the largest prunable weight)")
    p.add_argument("--recipe", default=None, help="YAML recipe for the training settings "
                   "(lr, batch size, data, ...); flags override it")
    p.set_defaults(func=cmd_dsd)


def cmd_dsd(args: argparse.Namespace) -> int:
    from squeezelab.checkpoint import load_checkpoint, resolve_checkpoint
    from squeezelab.workflows.dsd import DSDConfig, parse_phase_epochs, run_dsd

    phases = parse_phase_epochs(args.dsd_epochs)
    if phases["dense_epochs"]:
        raise ValueError(f"squeezelab dsd starts from a trained dense model: --epochs takes "
                         f"SPARSE-REDENSE, got {args.dsd_epochs!r}")
    dsd_cfg = DSDConfig(sparsity=args.sparsity, cycles=args.cycles,
                        redense_lr_factor=args.redense_lr_factor,
                        lr_schedule=args.lr_schedule, layers=args.layers,
                        exclude=args.exclude, plot_layer=args.plot_layer, **phases)
    ckpt_path = resolve_checkpoint(args.checkpoint)
    meta: dict[str, Any] = load_checkpoint(ckpt_path).meta
    # The dense run's own settings (data, lr, batch size) unless the recipe/flags say otherwise.
    if args.recipe is None and (meta.get("config") or {}):
        saved = TrainConfig.from_dict(meta["config"], source=str(ckpt_path))
        flags = config_from_args(argparse.Namespace(**{**vars(args), "recipe": None}))
        given = set(config_overrides(args, skip=("epochs",)))
        # a new run name (None: a fresh default), never the dense run's own directory
        cfg = saved.replace(**{"run_name": None, **{k: getattr(flags, k) for k in given}})
    else:
        cfg = config_from_args(args)
    # the model it writes is scored before and after under one protocol (fp32, the run's
    # flip setting): the run's own lines score in its autotuned precision
    from squeezelab.checkpoint import model_from_checkpoint
    from squeezelab.train.data import load_run_data
    from squeezelab.train.evaluate import EvalProtocol, evaluate_data

    data = load_run_data(cfg)
    protocol = EvalProtocol(flip=cfg.test_time_flip)
    before = evaluate_data(model_from_checkpoint(ckpt_path)[0], data.test, protocol)["top1"]
    print(f"before: top-1 {before:.4f} ({protocol.describe()}, {len(data.test)} test images)  "
          f"{ckpt_path}", flush=True)
    result = run_dsd(cfg, dsd_cfg, from_checkpoint=ckpt_path, data=tuple(data))
    status = report_run(result, f" after DSD (sparsity {dsd_cfg.sparsity}, {args.dsd_epochs})")
    if result.is_main and not result.interrupted:
        after = evaluate_data(result.model.cpu(), data.test, protocol)["top1"]
        print(f"after:  top-1 {after:.4f} ({protocol.describe()}) "
              f"({100 * (after - before):+.2f} points)")
    return status
