"""The record of a long training run, trained in pieces: what it cost and what it reached.

A run too long for one sitting (the best-accuracy recipe, ``recipes/cifar10_best.yaml``: hours
on a 2-core CPU) is stopped and resumed (``squeezelab train --resume RUN_DIR``) as often as
needed; its wall time from start to end then means nothing. What it cost is the time its epochs
took, training and scoring, summed over every piece from its ``metrics.jsonl``, and the CPU
time where the epochs recorded it. This script reads a run folder and writes that account
beside the final checkpoint's accuracy, the test curve and the machine, into one JSON:

    python benchmarks/long_run.py runs/cifar10_best --target-top1 0.93 --budget-hours 8 \\
        --output benchmarks/results/cifar10_best_b.json

A run distilled from a teacher (``--distill teacher=runs/T/...``) also paid for the teacher: when
the teacher's checkpoint lies in a run folder, that run is accounted the same way (its own
teacher too) and its hours count against the budget (``hours_with_teachers``); a teacher that
is a bare checkpoint, whose training left no record, leaves the budget undecided.

A run of another length is judged against a baseline at the same point of both schedules:
``--against runs/BASELINE`` puts, beside each of this run's scores, the baseline's top-1 at the
same fraction of its own schedule (epoch 75 of 150 against epoch 100 of 200), interpolated
linearly between the baseline's scored epochs, and the difference:

    python benchmarks/long_run.py runs/cifar10_best_distilled --against runs/cifar10_best_sgd
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def summarise(run_dir: Path, target_top1: float | None = None,
              budget_hours: float | None = None) -> dict[str, Any]:
    """The account of the run in ``run_dir`` (see the module docstring)."""
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise SystemExit(f"{run_dir} is not a run folder with epochs logged (no "
                         f"{metrics_path.name})")
    epochs = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not epochs:
        raise SystemExit(f"{metrics_path} holds no epoch yet")
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    environment = json.loads((run_dir / "environment.json").read_text()) \
        if (run_dir / "environment.json").is_file() else {}
    summary_path = run_dir / "summary.json"
    finished = summary_path.is_file()
    summary = json.loads(summary_path.read_text()) if finished else {}
    parameters = summary.get("parameters")
    if parameters is None and (run_dir / "checkpoints" / "last.json").is_file():
        # unfinished: the model its last checkpoint names, at the run's class count
        from squeezelab.models import create_model

        spec = json.loads((run_dir / "checkpoints" / "last.json").read_text())["model"]
        model = create_model(spec["name"], **spec.get("kwargs", {}))
        parameters = sum(p.numel() for p in model.parameters())
    train_s = sum(e.get("seconds", 0.0) for e in epochs)
    eval_s = sum(e.get("eval_seconds", 0.0) for e in epochs)
    cpu = [e.get("cpu_seconds") for e in epochs]
    scored = [e for e in epochs if "test_top1" in e]
    final = scored[-1] if scored else {}
    hours = (train_s + eval_s) / 3600
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "model": config.get("model"),
        "recipe_settings": config,
        "parameters": parameters,
        "finished": finished,
        "epochs_done": len(epochs),
        "epochs_planned": config.get("epochs"),
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "hours": hours,
        # epochs logged before runs recorded CPU time leave a part unmeasured
        "cpu_seconds_recorded": sum(c for c in cpu if c is not None),
        "epochs_with_cpu_seconds": sum(c is not None for c in cpu),
        "final_epoch": final.get("epoch"),
        "test_top1": final.get("test_top1"),
        "test_top5": final.get("test_top5"),
        "test_protocol": final.get("test_protocol"),
        "best_test_top1": max((e["test_top1"] for e in scored), default=None),
        "test_curve": [[e["epoch"], e["test_top1"]] for e in scored],
        "images_per_s_median": sorted(e["images_per_s"] for e in epochs)[len(epochs) // 2]
        if all("images_per_s" in e for e in epochs) else None,
        "run_environment": environment,
    }
    teacher = teacher_account(run_dir)
    if teacher is not None:
        result["teacher"] = teacher
    teacher_hours = 0.0 if teacher is None else teacher["hours_with_teachers"]
    result["hours_with_teachers"] = None if teacher_hours is None else hours + teacher_hours
    if target_top1 is not None:
        result["target_top1"] = target_top1
        result["target_met"] = bool(finished and final.get("test_top1") is not None
                                    and final["test_top1"] >= target_top1)
    if budget_hours is not None:
        result["budget_hours"] = budget_hours
        total = result["hours_with_teachers"]
        result["within_budget"] = None if total is None else total <= budget_hours
    return result


def teacher_account(run_dir: Path) -> dict[str, Any] | None:
    """The account of the run that trained ``run_dir``'s teacher (None if it was not
    distilled); ``{"checkpoint": ..., "hours_with_teachers": None}`` when the teacher is a
    checkpoint outside any run folder."""
    last = run_dir / "checkpoints" / "last.json"
    if not last.is_file():
        return None
    settings = (json.loads(last.read_text()).get("hooks") or {}).get("distill")
    if not settings:
        return None
    teacher = Path(settings["teacher"])
    if not teacher.is_absolute():
        # relative to where the training ran: here, or a folder above the run's
        teacher = next((base / teacher for base in (Path.cwd(), *run_dir.resolve().parents)
                        if (base / teacher).exists()), teacher)
    # runs/T, runs/T/checkpoints/best(.json|.safetensors): the run folder holding it
    candidates = [teacher, teacher.parent, teacher.parent.parent]
    folder = next((c for c in candidates if (c / "metrics.jsonl").is_file()), None)
    if folder is None:
        return {"checkpoint": settings["teacher"], "hours_with_teachers": None,
                "note": "not in a run folder: what its training cost is not recorded"}
    account = summarise(folder)
    keep = ("run_dir", "model", "parameters", "finished", "epochs_done", "hours",
            "hours_with_teachers", "test_top1", "test_protocol", "teacher")
    return {"checkpoint": settings["teacher"], **{k: account[k] for k in keep if k in account},
            "distill": settings}


def _interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """y at ``x`` on the polyline through ``points`` (sorted by x); None outside their span:
    a baseline is never extrapolated."""
    for x0, y0 in points:
        if x0 == x:
            return y0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 < x < x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def _planned_epochs(account: dict[str, Any]) -> int:
    planned = account["epochs_planned"]
    if isinstance(planned, bool) or not isinstance(planned, int) or planned < 1:
        raise SystemExit(f"{account['run_dir']}/config.yaml names no epoch count (epochs: "
                         f"{planned!r}): its scores cannot be placed on its schedule")
    return planned


def compare_at_fractions(run: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """``run``'s scores beside ``baseline``'s at the same fraction of each run's schedule (two
    ``summarise`` accounts): per scored epoch of ``run``, its ``fraction``, ``top1``, the
    baseline's epoch at that fraction (``against_epoch``, fractional), its interpolated top-1
    (``against_top1``, None before its first score or past its last) and ``difference``."""
    planned, their_planned = _planned_epochs(run), _planned_epochs(baseline)
    points = [(epoch / their_planned, top1) for epoch, top1 in baseline["test_curve"]]
    rows = []
    for epoch, top1 in run["test_curve"]:
        theirs = _interpolate(points, epoch / planned)
        rows.append({"epoch": epoch, "fraction": epoch / planned, "top1": top1,
                     "against_epoch": epoch / planned * their_planned, "against_top1": theirs,
                     "difference": None if theirs is None else top1 - theirs})
    return {"run_dir": baseline["run_dir"], "epochs_planned": their_planned,
            "finished": baseline["finished"], "test_top1": baseline["test_top1"],
            "rows": rows}


def comparison_table(comparison: dict[str, Any]) -> str:
    """The comparison as the text table the script prints."""
    final = comparison["test_top1"]
    lines = [f"against {comparison['run_dir']} ({comparison['epochs_planned']} epochs, "
             + ("final" if comparison["finished"] else "so far")
             + (f" {100 * final:.2f}%" if final is not None else " not scored")
             + ") at the same fraction of its schedule (interpolated):",
             f"{'epoch':>6} {'fraction':>9} {'top-1':>7} {'its epoch':>10} {'its top-1':>10} "
             f"{'difference':>11}"]
    for r in comparison["rows"]:
        theirs = r["against_top1"]
        lines.append(f"{r['epoch']:>6} {r['fraction']:>9.3f} {100 * r['top1']:>7.2f} "
                     f"{r['against_epoch']:>10.1f} "
                     + (f"{100 * theirs:>10.2f} {100 * r['difference']:>+11.2f}"
                        if theirs is not None else f"{'-':>10} {'-':>11}"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="the run folder (runs/NAME)")
    parser.add_argument("--target-top1", type=float, default=None,
                        help="the final top-1 (a fraction) the run is meant to reach")
    parser.add_argument("--budget-hours", type=float, default=None,
                        help="the hours of training and scoring it may take")
    parser.add_argument("--against", metavar="RUN_DIR", default=None,
                        help="a baseline run (of any length): its top-1 at the same fraction "
                        "of its schedule beside each of this run's scores")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    result = summarise(Path(args.run_dir), args.target_top1, args.budget_hours)
    if args.against:
        result["against"] = compare_at_fractions(result, summarise(Path(args.against)))
    top1 = result["test_top1"]
    print(f"{result['run_dir']}: {result['epochs_done']}/{result['epochs_planned']} epochs, "
          f"{result['hours']:.2f} h of training and scoring"
          + (f" ({result['hours_with_teachers']:.2f} h with its teacher's)"
             if result.get("teacher") and result["hours_with_teachers"] is not None else
             " (its teacher's cost unknown)" if result.get("teacher") else "")
          + (", final test top-1 " if result["finished"] else ", test top-1 so far ")
          + (f"{100 * top1:.2f}%" if top1 is not None else "not scored yet")
          + ("" if result["finished"] else " (unfinished: resume it with squeezelab train "
             f"--resume {result['run_dir']})"), flush=True)
    if "against" in result:
        print(comparison_table(result["against"]), flush=True)
    write_result("long_run", result, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
