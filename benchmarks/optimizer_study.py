"""The seed studies' optimizer and activation grids: expand a grid file
(recipes/studies/*.yaml, see squeezelab/workflows/study.py) into runs, train each through
``train()`` and write one JSON with test accuracy and seconds per epoch per cell.

    python benchmarks/optimizer_study.py recipes/studies/optimizer_grid.yaml --dry-run
    python benchmarks/optimizer_study.py recipes/studies/optimizer_grid.yaml \
        --epochs 1 --limit-train 2000 --limit-test 500 --only residual-b128
    python benchmarks/optimizer_study.py --table benchmarks/results/optimizer_study.json

A run ends by printing the study as a Markdown table (the README's is that table); --table
prints it again from a recorded JSON without training.

The data is decoded once and shared by every cell. Cells use the optimizer, schedule, batch
size and model of the grid; PGD cells get their perturbation hook from the config.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result  # noqa: E402

from squeezelab.workflows.study import expand_grid  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("grid", nargs="?", help="grid file, e.g. recipes/studies/optimizer_grid.yaml")
    p.add_argument("--table", metavar="JSON", default=None,
                   help="print the Markdown table of a recorded study and exit")
    p.add_argument("--epochs", type=int, default=None, help="override the grid's epochs")
    p.add_argument("--limit-train", type=int, default=None, help="balanced train subset")
    p.add_argument("--limit-test", type=int, default=None, help="balanced test subset")
    p.add_argument("--data", default=None, help="override the grid's data source")
    p.add_argument("--out-dir", default=None, help="where the runs go (default: the grid's)")
    p.add_argument("--only", default=None, metavar="GLOB", help="run only cells whose name "
                   "matches, e.g. 'residual-*-adam-*'")
    p.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    p.add_argument("-o", "--output", default=None,
                   help="JSON path (default: benchmarks/results/<grid name>.json)")
    return p.parse_args(argv)


def markdown_table(cells: list[dict]) -> str:
    """One row per combination of the inner axes, one column per combination of the outer
    ones (the first two axes of a grid with three or more, the first of a grid with two):
    test top-1 and seconds per epoch in each cell, so a study of 52 runs reads as 13 x 4."""
    axes = list(cells[0]["variants"])
    outer = axes[:2] if len(axes) > 2 else axes[:1]
    inner = [a for a in axes if a not in outer]

    def label(cell, names):
        return " ".join(v for v in (cell["variants"][a] for a in names) if v is not None)

    columns = list(dict.fromkeys(label(c, outer) for c in cells))
    rows = list(dict.fromkeys(label(c, inner) for c in cells))
    grid = {(label(c, inner), label(c, outer)): c for c in cells}
    lines = ["| " + " / ".join(inner) + " | " + " | ".join(columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        values = []
        for column in columns:
            cell = grid.get((row, column))
            values.append("" if cell is None else
                          f"{100 * cell['test_top1']:.2f}% ({cell['seconds_per_epoch']:.1f} s)")
        lines.append(f"| {row} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.table is not None:
        try:
            cells = json.loads(Path(args.table).read_text())["cells"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"error: {args.table} is not a study result JSON ({e})")
        print(markdown_table(cells))
        return 0
    if args.grid is None:
        raise SystemExit("error: give a grid file (or --table JSON)")
    overrides = {k: v for k, v in dict(epochs=args.epochs, limit_train=args.limit_train,
                                       limit_test=args.limit_test, data=args.data,
                                       out_dir=args.out_dir).items() if v is not None}
    overrides["progress"] = False
    cells = expand_grid(args.grid, overrides)
    if args.only:
        cells = [c for c in cells if fnmatch.fnmatchcase(c.name, args.only)]
        if not cells:
            raise SystemExit(f"error: no cell of {args.grid} matches --only {args.only!r}")
    if args.dry_run:
        for c in cells:
            cfg = c.config
            print(f"{c.name:<40} {cfg.model:<22} batch {cfg.batch_size:<4} {cfg.optimizer:<9} "
                  f"{cfg.schedule:<16} lr {cfg.lr} epochs {cfg.epochs}")
        print(f"{len(cells)} cells")
        return 0

    from squeezelab.data import load_split, resolve_default_cifar10
    from squeezelab.train import train

    first = cells[0].config
    source = first.data or resolve_default_cifar10()
    data = {}
    results = []
    for cell in cells:
        cfg = cell.config
        key = (cfg.data, cfg.limit_train, cfg.limit_test, cfg.image_size)
        if key not in data:  # decoded once per distinct data setting (once for these grids)
            common = dict(root=cfg.data_root, image_size=cfg.image_size, seed=cfg.seed,
                          progress=False)
            data[key] = (load_split(cfg.data or source, "train", limit=cfg.limit_train,
                                    **common),
                         load_split(cfg.data or source, "test", limit=cfg.limit_test,
                                    **common))
        print(f"[{len(results) + 1}/{len(cells)}] {cell.name}", flush=True)
        run = train(cfg, data=data[key])
        seconds = [r["seconds"] for r in run.history]
        results.append({
            "name": cell.name, "variants": cell.variants, "model": cfg.model,
            "batch_size": cfg.batch_size, "optimizer": cfg.optimizer, "schedule": cfg.schedule,
            "lr": cfg.lr, "model_args": cfg.model_args, "epochs": len(run.history),
            "test_top1": run.final.get("test_top1"),
            "best_test_top1": max((r.get("test_top1", -1.0) for r in run.history), default=None),
            "train_loss": run.final.get("train_loss"),
            "seconds_per_epoch": statistics.mean(seconds),
            "seconds_per_epoch_stdev": statistics.stdev(seconds) if len(seconds) > 1 else 0.0,
            "pgd_perturbations": sum(r.get("pgd_perturbations", 0) for r in run.history),
            "run_dir": str(run.run_dir),
        })
    name = Path(args.grid).stem.replace("_grid", "_study")
    write_result(name, {"grid": str(args.grid), "overrides": overrides, "data": str(source),
                        "cells": results}, args.output)
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
