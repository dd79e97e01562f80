"""``squeezelab study RECIPE``: run a study (a grid of runs described by one recipe in
recipes/studies/), resumably, into one results JSON; ``--jobs N`` runs N cells at once on
this machine (the cells of several recipes as one pool), ``--list`` prints one command per
cell for a cluster or a shell loop, ``--cell K`` runs one, ``--merge`` rebuilds the results
JSON from the cells that have finished."""
from __future__ import annotations

import argparse
import sys

from squeezelab.cli import DefaultsHelpFormatter


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run a study recipe (recipes/studies/*.yaml): a grid of "
                       "runs, resumable, one results JSON", formatter_class=DefaultsHelpFormatter,
                       description="Run a study: a grid of ordinary runs described by one "
                       "recipe, resumably, into one results JSON. --list prints one command per "
                       "cell (for a cluster or a shell loop), --cell K runs one, --merge "
                       "rebuilds the results JSON from the cells that have finished.")
    p.add_argument("recipes", nargs="+", metavar="recipe",
                   help="study recipe, e.g. recipes/studies/bypass.yaml; several (say "
                   "recipes/studies/*.yaml) run one after another, each into its own folder")
    p.add_argument("--budget", choices=("smoke", "cpu", "full"), default="cpu",
                   help="smoke: minutes, a check that every cell runs; cpu: what a 2-core CPU "
                   "does in hours (the recorded results); full: the publication's settings")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="the study's folder (cells/, runs/, results.json); unset: "
                   "runs/studies/<study>/<budget>")
    p.add_argument("--out-root", metavar="DIR", default=None,
                   help="put each study's folder in DIR/<study>/<budget> (say, a fresh DIR for "
                   "a second run of several recipes); unset: runs/studies")
    p.add_argument("--results", metavar="PATH", default=None,
                   help="where the merged results JSON goes; unset: <out>/results.json")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED", default=None,
                   help="run these seeds instead of the recipe's")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE[,KEY=VALUE]", help="a setting for every cell, over the "
                   "recipe (e.g. --set download=true; in a study of several kinds, one kind's: "
                   "--set 'per_kind={train: {download: true}}'); repeatable, recorded in the "
                   "results")
    p.add_argument("--import", dest="imports", nargs="+", metavar="RESULTS", default=[],
                   help="first copy the finished cells of these results JSONs (the same study "
                   "and budget, made on another machine or committed) into this study's "
                   "folder, so only the rest runs; with --merge: only import and merge")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run N cells at once on this machine, each in its own process with "
                   "the cores shared out as its threads (a cell that starts from another's "
                   "model waits for it); with several recipes the cells of all of them are "
                   "one pool, so no core waits for one study's last cell; Ctrl-C stops them "
                   "all, the same command resumes")
    # one of --jobs' processes: waits for sources other workers run, leaves the summary to
    # the process that started it
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    action = p.add_mutually_exclusive_group()
    action.add_argument("--list", action="store_true",
                        help="print one command per cell (run them anywhere, in any order, "
                        "then --merge) and exit")
    action.add_argument("--cell", metavar="K", default=None,
                        help="run only cell K (1-based, as --list numbers them, or its name)")
    action.add_argument("--merge", action="store_true",
                        help="only rebuild the results JSON from the finished cells")
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    from squeezelab.config import parse_key_values
    from squeezelab.workflows.studies import StudyError, plan_study

    if args.jobs != 1 and (args.cell is not None or args.merge or args.worker):
        raise StudyError("--jobs runs the whole study; it does not go with --cell, --merge or "
                         "--worker")
    if args.out is not None and args.out_root is not None:
        raise StudyError("--out names one study's folder, --out-root the folder of each "
                         "study's: give one of them")
    if len(args.recipes) > 1:
        one_study = [flag for flag, given in (
            ("--out", args.out), ("--results", args.results), ("--cell", args.cell),
            ("--import", args.imports)) if given]
        if one_study:
            raise StudyError(f"{', '.join(one_study)} belong(s) to one study: give a single "
                             f"recipe with it, not {len(args.recipes)}")
    overrides = parse_key_values(",".join(args.overrides), "--set")
    # every recipe is read and checked before any cell runs
    plans = [plan_study(recipe, args.budget, out=args.out, results=args.results,
                        seeds=args.seeds, overrides=overrides, out_root=args.out_root)
             for recipe in args.recipes]
    if args.worker:  # one of --jobs' processes: leaves the summary to the one that started it
        from squeezelab.workflows.studies import run_studies

        run_studies(plans, progress=False, wait_for_sources=True, log_passes=False)
        return 0
    if args.jobs != 1 and not args.list:
        summaries = _pool(plans, args)
    else:
        summaries = [_study(plan, args) for plan in plans]
    if len(plans) > 1 and not args.list:
        print(f"{len(plans)} studies:")
        for line in summaries:
            print(f"  {line}")
    return 0


def _pool(plans, args: argparse.Namespace) -> list[str]:
    """The studies' cells as one pool of ``--jobs`` worker processes; returns each study's
    one-line count, as ``_study`` does."""
    from squeezelab.workflows.studies import run_studies_jobs

    if args.imports:  # one study (checked above): its finished cells copied before any runs
        _import(plans[0], args.imports)
    return [_report(plan, results)
            for plan, results in zip(plans, run_studies_jobs(plans, args.jobs), strict=True)]


def _study(plan, args: argparse.Namespace) -> str:
    """Run (or list, or merge) one study as ``args`` ask; returns its one-line count."""
    from squeezelab.workflows.studies import cell_commands, merge_command, merge_study, run_study

    if args.list:
        print("\n".join(cell_commands(plan)))
        print(f"# {len(plan.cells)} cells; when they are done: {merge_command(plan)}",
              file=sys.stderr)
        return ""
    if args.imports:
        _import(plan, args.imports)
    results = merge_study(plan) if args.merge else run_study(plan, args.cell)
    return _report(plan, results)


def _report(plan, results: dict) -> str:
    """Print a study's merged results as a few lines; returns their first line and where
    the results JSON is."""
    from squeezelab.workflows.studies import format_summary

    summary = format_summary(results)
    print(summary)
    print(f"results: {plan.results_path}")
    return f"{summary.splitlines()[0]}: {plan.results_path}"


def _import(plan, paths: list[str]) -> None:
    """Copy the finished cells of the results JSONs ``paths`` into ``plan``'s folder."""
    from squeezelab.workflows.studies import import_results

    copied = import_results(plan, paths)
    print(f"imported {copied} finished cell(s) into {plan.cells_dir}")
