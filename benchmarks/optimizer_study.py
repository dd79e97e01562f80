"""The optimizer and activation grids as the README's Markdown tables.

The grids are studies (recipes/studies/optimizer_grid.yaml, activation_grid.yaml) that
``squeezelab study`` runs into one results JSON; this script prints such a file as a table:

    squeezelab study recipes/studies/optimizer_grid.yaml --budget cpu
    python benchmarks/optimizer_study.py --table runs/studies/optimizer_grid/cpu/results.json

It also reads the files the grids were recorded in before they were studies
(benchmarks/results/optimizer_study.json, activation_study.json):

    python benchmarks/optimizer_study.py --table benchmarks/results/optimizer_study.json

Each table cell: test top-1 and seconds per training epoch; a study run with several seeds
shows the mean over its seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", metavar="JSON", required=True,
                   help="a study results JSON (squeezelab study) or a grid result recorded by "
                   "the earlier version of this script")
    return p.parse_args(argv)


def table_cells(result: dict) -> list[dict]:
    """``[{variants, test_top1, seconds_per_epoch}]`` from either format: a study's groups
    (mean over seeds of the done cells), or the earlier script's cells as they are."""
    if "groups" not in result:
        return result["cells"]
    by_name = {c["name"]: c for c in result["cells"]}
    cells = []
    for group in result["groups"]:
        if not group["n"]:
            continue
        done = [by_name[n] for n in group["cells"]]
        cells.append({"variants": group["variants"],
                      "test_top1": group["metrics"]["test_top1"]["mean"],
                      "seconds_per_epoch": sum(c["seconds_per_epoch"] for c in done) / len(done)})
    return cells


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
    try:
        cells = table_cells(json.loads(Path(args.table).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"error: {args.table} is not a study result JSON ({e})") from None
    if not cells:
        raise SystemExit(f"error: {args.table} has no finished cells yet")
    print(markdown_table(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
