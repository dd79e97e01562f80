"""What study cells cost when rerun on a quiet machine, against what their recorded results say.

The recorded study results (``benchmarks/results/studies/*_cpu.json``) were mostly made with
two to four runs sharing the two cores, so their cells' seconds are upper bounds. Rerun a few
cells quietly, two at a time with one thread each (as ``squeezelab study --jobs 2`` runs them),
each into its own ``--out`` folder::

    squeezelab study recipes/studies/bypass.yaml --budget cpu --out sample/bypass --cell simple-s0

then set each rerun cell beside the recorded one of the same name::

    python benchmarks/study_cost_sample.py sample/*/ \
        --output benchmarks/results/studies/cost_sample_b.json

Per cell: the recorded seconds and machine, the rerun's seconds and CPU seconds, and their
ratio; overall, the ratio of the sums, split by whether the recorded cell ran on this kind of
CPU (the rerun's) or another. Top-1 of both is kept too: a rerun that scored far from the
record would not be the same work.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_result  # noqa: E402

RECORDED = RESULTS / "studies"


def _cells(results_path: Path) -> dict[str, dict[str, Any]]:
    data = json.loads(results_path.read_text())
    cells = data["cells"]
    return {c["name"]: c for c in (cells.values() if isinstance(cells, dict) else cells)}


def _done_cells(rerun_dir: Path) -> list[dict[str, Any]]:
    """The finished cells of a study folder (its cells/*.json records)."""
    cells = [json.loads(p.read_text()) for p in sorted((rerun_dir / "cells").glob("*.json"))]
    return [c for c in cells if c.get("status") == "done"]


def compare(rerun_dirs: list[Path], recorded_dir: Path = RECORDED,
            budget: str = "cpu") -> dict[str, Any]:
    """The comparison of every finished cell in ``rerun_dirs`` with the recorded cell of the
    same study (``<recorded_dir>/<study>_<budget>.json``) and name."""
    rows = []
    for folder in rerun_dirs:
        merged = folder / "results.json"
        study = json.loads(merged.read_text())["study"] if merged.is_file() else folder.name
        for cell in _done_cells(folder):
            recorded_path = recorded_dir / f"{study}_{budget}.json"
            if not recorded_path.is_file():
                raise SystemExit(f"no recorded results {recorded_path} for the rerun {folder}")
            recorded = _cells(recorded_path).get(cell["name"])
            if recorded is None or recorded.get("status") != "done":
                raise SystemExit(f"{recorded_path} has no finished cell {cell['name']!r}")
            same_cpu = recorded["machine"].get("cpu") == cell["machine"].get("cpu") and \
                recorded["machine"].get("cpu_flags") == cell["machine"].get("cpu_flags")
            rows.append({
                "study": study, "cell": cell["name"], "kind": cell.get("kind"),
                "recorded_seconds": recorded["seconds"],
                "recorded_machine": recorded["machine"],
                "rerun_seconds": cell["seconds"], "rerun_cpu_seconds": cell.get("cpu_seconds"),
                "rerun_machine": cell["machine"], "same_cpu": same_cpu,
                "ratio": cell["seconds"] / recorded["seconds"],
                "recorded_top1": (recorded.get("metrics") or {}).get("test_top1"),
                "rerun_top1": (cell.get("metrics") or {}).get("test_top1"),
            })
    if not rows:
        raise SystemExit(f"no finished cell in {', '.join(map(str, rerun_dirs))}")
    out: dict[str, Any] = {"cells": rows}
    for label, keep in (("all", lambda r: True), ("same_cpu", lambda r: r["same_cpu"]),
                        ("other_cpu", lambda r: not r["same_cpu"])):
        chosen = [r for r in rows if keep(r)]
        if chosen:
            recorded = sum(r["recorded_seconds"] for r in chosen)
            rerun = sum(r["rerun_seconds"] for r in chosen)
            out[label] = {"cells": len(chosen), "recorded_seconds": recorded,
                          "rerun_seconds": rerun, "ratio": rerun / recorded}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reruns", nargs="+", type=Path, help="study folders of the rerun cells")
    parser.add_argument("--recorded", type=Path, default=RECORDED,
                        help="folder of the recorded <study>_<budget>.json results")
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    result = compare(args.reruns, args.recorded, args.budget)
    for r in result["cells"]:
        print(f"{r['study']:>16} {r['cell']:<30} recorded {r['recorded_seconds']:7.0f} s "
              f"({r['recorded_machine'].get('cpu')}), rerun {r['rerun_seconds']:6.0f} s: "
              f"x{r['ratio']:.2f}")
    for label in ("all", "same_cpu", "other_cpu"):
        if label in result:
            s = result[label]
            print(f"{label}: {s['cells']} cells, recorded {s['recorded_seconds']:.0f} s, rerun "
                  f"{s['rerun_seconds']:.0f} s: x{s['ratio']:.2f}")
    write_result("study_cost_sample", result, args.output)


if __name__ == "__main__":
    main()
