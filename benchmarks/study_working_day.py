"""All the seed studies at one budget, end to end on this machine, as one command run in pieces:
how long they take together against the target of one working day.

    python benchmarks/study_working_day.py --out-root day/ \
        --output benchmarks/results/studies/working_day_b.json

or, in pieces of whole studies kept in the repository between sessions (as it was measured):

    python benchmarks/study_working_day.py --out-root day/ \
        --keep benchmarks/results/studies/working_day_b/ \
        --only recipes/studies/course_table1.yaml --only recipes/studies/deep_compression.yaml \
        --output benchmarks/results/studies/working_day_b.json

Each call runs (or resumes) ``squeezelab study recipes/studies/*.yaml --budget cpu --jobs 2
--out-root day/`` (the studies' cells as one pool, ``parallel.py``) and adds the piece it ran to
``day/working_day.json``: when it started and ended, its wall seconds, the exit status and how
many cells had finished before and after (written as it starts and every minute, so a piece
killed outright still counts the time it ran). A Ctrl-C (or SIGINT to this script) is passed
on once: the cells running save their checkpoints, and the next call resumes them. Between
pieces
nothing of the studies runs, so the pieces' wall seconds summed are the machine time the
studies took. Once every cell of every study has ended (done, failed, or skipped for data that
is not here), the account is written: that sum, each study's cells with their seconds and CPU
seconds, and each cell's top-1 beside the recorded result of the same name (``--recorded``,
the ``<study>_<budget>.json`` files): the same seeds on the same kind of CPU give the same
top-1, so a difference there says the work changed, not only its speed.

Two options make the day survive its pieces running in different sessions, even on a fresh
machine of the same kind:

- ``--only RECIPE`` (repeatable): this piece runs only these of the day's studies (whole studies
  sized to end within one session, so a session's end never strands a half-run study whose
  models the rest of it reads); the account still waits for every study of the day.
- ``--keep DIR`` (a folder in the repository): the day's durable part -- the pieces file, each
  study's speed pin and the records of its ended cells -- is copied there at the start of a
  piece, every heartbeat and at its end, and copied back into an out-root that lacks it before
  a piece starts. Run folders (checkpoints) are not kept, so a cell another cell still has to
  read (one whose reader has not ended) is not kept either: it runs again after a restore.
  Time lost that way (and a running cell's progress) stays in the pieces' sum, which can only
  overstate the day.

Each piece records the machine it ran on; the account says whether every piece ran on one
kind of CPU (pieces on different kinds do not add up to one machine's day).

Two ways to size a day without running it: ``--estimate COST_SAMPLE`` scales the recorded
results' cells by a quiet rerun of a few of them, and ``--replay DAY_DIR`` schedules the cells a
day measured as one uninterrupted pool (a second ``--replay`` folder's studies, rerun at another
budget, replace the first's). Against the measured day of 2026-12-05 (9.34 h in eight pieces)
the replay of its cells said 9.21 h.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECORDED = RESULTS / "studies"
PIECES_FILE = "working_day.json"
#: how often a running piece's wall time is written down
HEARTBEAT_SECONDS = 60.0
#: one working day of the 2-core machine, the issue's target for the cpu budgets together
TARGET_HOURS = 8.0


def study_command(recipes: list[str], budget: str, jobs: int, out_root: Path,
                  extra: list[str]) -> list[str]:
    """The ``squeezelab study`` command line of every piece."""
    return [sys.executable, "-m", "squeezelab", "study", *recipes, "--budget", budget,
            "--jobs", str(jobs), "--out-root", str(out_root), *extra]


def study_counts(out_root: Path, budget: str, names: list[str] | None = None
                 ) -> dict[str, dict[str, int]]:
    """Each study's cell counts as its merged results give them (every piece merges at its
    end, an interrupted one too): {study: {total, done, skipped, failed, pending}}; ``names``:
    only these studies (other folders under the root are not this run's)."""
    counts = {}
    for path in sorted(out_root.glob(f"*/{budget}/results.json")):
        data = json.loads(path.read_text())
        if names is None or data["study"] in names:
            counts[data["study"]] = data["counts"]
    return counts


def study_names(recipes: list[str]) -> list[str] | None:
    """The studies ``recipes`` name, or None where one cannot be read (the study command
    then says why)."""
    try:
        return [str(yaml.safe_load(Path(r).read_text())["study"]) for r in recipes]
    except (OSError, yaml.YAMLError, TypeError, KeyError):
        return None


#: a cell record's statuses once the cell has ended (pending cells have no record)
ENDED = ("done", "failed", "skipped")


def durable_records(plan: Any) -> list[Path]:
    """The records of ``plan``'s ended cells that can stand for their cells without the run
    folder: every ended cell but one a cell that has not ended still reads, directly or through
    another cell that will run again (its checkpoint would be needed, and it is not kept)."""
    from squeezelab.workflows.studies.results import read_record

    ended = {c.name for c in plan.cells
             if (r := read_record(plan.cell_file(c))) is not None and r["status"] in ENDED}
    rerun = {c.name for c in plan.cells} - ended
    by_name = {c.name: c for c in plan.cells}
    grew = True
    while grew:  # a cell that runs again needs its sources' run folders: they run again too
        sources = {t for name in rerun for t in by_name[name].references.values()}
        grew = not sources <= rerun
        rerun |= sources
    return [plan.cell_file(c) for c in plan.cells if c.name not in rerun]


def _copy(src: Path, dst: Path) -> None:
    """``src`` to ``dst``, written to a temporary file and renamed (a kill leaves the old one)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


def keep_state(plans: list[Any], out_root: Path, keep: Path) -> int:
    """Copy the day's durable part under ``out_root`` to ``keep`` (see the module docstring):
    the pieces file, each study's speed pin and its durable cell records; a record kept before
    that is no longer durable here (its reader was reset) is removed. Returns the records kept."""
    kept = 0
    if (out_root / PIECES_FILE).is_file():
        _copy(out_root / PIECES_FILE, keep / PIECES_FILE)
    for plan in plans:
        target = keep / plan.study.study / plan.budget
        records = durable_records(plan)
        for path in records:
            _copy(path, target / "cells" / path.name)
        names = {p.name for p in records}
        for old in (target / "cells").glob("*.json"):
            if old.name not in names:
                old.unlink()
        speed = plan.out_dir / "speed.json"
        if speed.is_file():
            _copy(speed, target / "speed.json")
        kept += len(records)
    return kept


def restore_state(plans: list[Any], out_root: Path, keep: Path) -> int:
    """Copy what ``keep`` holds and ``out_root`` lacks back under it (a fresh machine, or an
    out-root lost with its machine): the pieces file where ``keep``'s has more pieces, and every
    kept record and speed pin that is missing. Returns the records restored."""
    restored = 0
    pieces = keep / PIECES_FILE
    if pieces.is_file():
        here = out_root / PIECES_FILE
        mine = json.loads(here.read_text()) if here.is_file() else []
        if len(json.loads(pieces.read_text())) > len(mine):
            _copy(pieces, here)
    for plan in plans:
        source = keep / plan.study.study / plan.budget
        for path in sorted((source / "cells").glob("*.json")):
            target = plan.cells_dir / path.name
            if not target.is_file():
                _copy(path, target)
                restored += 1
        if (source / "speed.json").is_file() and not (plan.out_dir / "speed.json").is_file():
            _copy(source / "speed.json", plan.out_dir / "speed.json")
    return restored


def _ended(counts: dict[str, dict[str, int]]) -> int:
    return sum(c["total"] - c["pending"] for c in counts.values())


def _write_piece(pieces_path: Path, index: int, piece: dict[str, Any]) -> None:
    """Put ``piece`` at ``index`` of the pieces file (appended where ``index`` is past the
    end), written to a temporary file and renamed, so a kill never leaves half a file."""
    pieces = json.loads(pieces_path.read_text()) if pieces_path.is_file() else []
    pieces[index:index + 1] = [piece]
    pieces_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pieces_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(pieces, indent=2) + "\n")
    os.replace(tmp, pieces_path)


def run_piece(command: list[str], out_root: Path, budget: str,
              heartbeat_seconds: float = HEARTBEAT_SECONDS,
              names: list[str] | None = None,
              on_write: Any = None) -> dict[str, Any]:
    """Run ``command`` to its end (a SIGINT, SIGTERM or SIGHUP to this script passed on to it
    once, as a SIGINT) and add the piece to the pieces file; returns the piece. The piece is
    written when it starts and again every ``heartbeat_seconds``, so a piece killed outright
    (a session's end) still counts the time it ran, to within a heartbeat; ``on_write`` is
    called after each of those writes (``--keep`` copies the day's state then)."""
    pieces_path = out_root / PIECES_FILE
    index = len(json.loads(pieces_path.read_text())) if pieces_path.is_file() else 0
    before = study_counts(out_root, budget, names)
    t0 = time.perf_counter()
    piece = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ended_at": None,
             "wall_seconds": 0.0, "exit_code": None, "cells_ended_before": _ended(before),
             "command": shlex.join(command), "machine": _piece_machine()}

    def write(value: dict[str, Any]) -> None:
        _write_piece(pieces_path, index, value)
        if on_write is not None:
            on_write()

    write(piece)
    # Ctrl-C, a hang-up or a polite kill: one SIGINT on to the study, whose cells then save
    # their checkpoints (a second one would stop its parent before the workers have saved)
    child: list[subprocess.Popen] = []
    asked: list[int] = []

    def pass_on(signum, frame):
        asked.append(signum)
        if len(asked) == 1 and child and child[0].poll() is None:
            child[0].send_signal(signal.SIGINT)

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, pass_on) for s in stops}
    try:
        # a session of its own: a terminal's Ctrl-C reaches this script only, which passes
        # it on once
        child.append(subprocess.Popen(command, start_new_session=True))
        if asked:  # asked to stop before the study had started
            child[0].send_signal(signal.SIGINT)
        while True:
            try:
                code = child[0].wait(timeout=heartbeat_seconds)
                break
            except subprocess.TimeoutExpired:
                write({**piece, "wall_seconds": time.perf_counter() - t0})
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    after = study_counts(out_root, budget, names)
    piece.update(ended_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 wall_seconds=time.perf_counter() - t0, exit_code=code,
                 cells_ended_after=_ended(after),
                 cells_total=sum(c["total"] for c in after.values()))
    write(piece)
    return piece


def _piece_machine() -> dict[str, Any]:
    """What a piece ran on: the fields that say which kind of machine it was."""
    from squeezelab.workflows.studies.results import machine

    info = machine()
    return {k: info.get(k) for k in ("cpu", "cpu_flags", "cores", "torch")}


def _same_cpu(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("cpu") == b.get("cpu") and a.get("cpu_flags") == b.get("cpu_flags")


def _resumed_max(cell: dict[str, Any], key: str, summed_key: str) -> float | None:
    """``cell[key]``, or ``cell[summed_key]`` where that is larger (None where ``key`` is
    missing: unknown, not zero)."""
    value = cell.get(key)
    if value is None:
        return None
    return max(float(value), float(cell.get(summed_key) or 0.0))


def account(out_root: Path, budget: str, recorded_dir: Path = RECORDED,
            names: list[str] | None = None) -> dict[str, Any]:
    """The working day's account from the pieces file and the studies' merged results (see
    the module docstring); ``names``: only these studies (default: every folder)."""
    pieces = json.loads((out_root / PIECES_FILE).read_text())
    wall = sum(p["wall_seconds"] for p in pieces)
    studies, compared = [], []
    for path in sorted(out_root.glob(f"*/{budget}/results.json")):
        data = json.loads(path.read_text())
        if names is not None and data["study"] not in names:
            continue
        cells = [c for c in data["cells"] if c["status"] == "done"]
        recorded_path = recorded_dir / f"{data['study']}_{budget}.json"
        recorded = {}
        if recorded_path.is_file():
            recorded = {c["name"]: c for c in json.loads(recorded_path.read_text())["cells"]
                        if c.get("status") == "done"}
        for c in cells:
            old = recorded.get(c["name"])
            if old is None:
                continue
            new_top1 = (c.get("metrics") or {}).get("test_top1")
            old_top1 = (old.get("metrics") or {}).get("test_top1")
            compared.append({"study": data["study"], "cell": c["name"], "top1": new_top1,
                             "recorded_top1": old_top1,
                             "same_cpu": _same_cpu(c.get("machine") or {},
                                                   old.get("machine") or {}),
                             "seconds": c.get("seconds"),
                             "recorded_seconds": old.get("seconds")})
        # a resumed cell's seconds are its last process's; its epochs' own (train cells sum
        # them over every process) count where larger
        cpu = [_resumed_max(c, "cpu_seconds", "train_cpu_seconds") for c in cells]
        studies.append({"study": data["study"], "counts": data["counts"],
                        "seconds": sum(_resumed_max(c, "seconds", "train_seconds") or 0
                                       for c in cells),
                        "cpu_seconds": sum(cpu) if None not in cpu else None,
                        "results": str(path)})
    same = [r for r in compared if r["same_cpu"] and None not in (r["top1"],
                                                                   r["recorded_top1"])]
    cpu_total = [s["cpu_seconds"] for s in studies]
    # pieces written before pieces recorded their machine count as unknown, not as another kind
    kinds = {json.dumps(p["machine"], sort_keys=True) for p in pieces if p.get("machine")}
    return {
        "out_root": str(out_root), "budget": budget, "pieces": pieces,
        "machine_kinds": [json.loads(k) for k in sorted(kinds)],
        "one_machine_kind": len(kinds) <= 1,
        "wall_seconds": wall, "wall_hours": wall / 3600, "target_hours": TARGET_HOURS,
        "met": wall <= TARGET_HOURS * 3600,
        "cells_seconds": sum(s["seconds"] for s in studies),
        "cells_cpu_seconds": sum(cpu_total) if None not in cpu_total else None,
        "studies": studies,
        "top1_against_recorded": {
            "cells": compared,
            "same_cpu_cells": len(same),
            "same_cpu_equal": sum(r["top1"] == r["recorded_top1"] for r in same),
            "same_cpu_max_difference": max((abs(r["top1"] - r["recorded_top1"]) for r in same),
                                           default=None),
        },
    }


def _kind(machine: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    return str(machine.get("cpu")), tuple(machine.get("cpu_flags") or ())


def _source_names(study: str, cell: dict[str, Any]) -> list[str]:
    """The "<study>/<cell>" names of the cells whose models ``cell`` starts from."""
    return [f"{study}/{s['cell']}" for s in (cell.get("sources") or {}).values()
            if isinstance(s, dict) and "cell" in s]


def _scaled_cells(recorded_dir: Path, budget: str, sample: dict[str, Any]
                  ) -> tuple[list[list[tuple[str, float, list[str]]]], list[str]]:
    """Each recorded study's ended cells (done or failed) in plan order as (name, seconds,
    source names): each cell's core-seconds as the report's cost table counts them
    (``cell_core_seconds``) times the quiet rerun's ratio for the kind of CPU it was recorded
    on (the cost sample's cells of that kind, summed). A cell recorded on a kind the sample
    did not rerun counts as the mean of its study's other cells (of all studies' cells where
    its study has no other); their names come back second."""
    from squeezelab.workflows.report.cost import cell_core_seconds

    recorded_by_kind: dict[tuple, float] = {}
    rerun_by_kind: dict[tuple, float] = {}
    for row in sample["cells"]:
        kind = _kind(row["recorded_machine"])
        recorded_by_kind[kind] = recorded_by_kind.get(kind, 0.0) + row["recorded_seconds"]
        rerun_by_kind[kind] = rerun_by_kind.get(kind, 0.0) + row["rerun_seconds"]
    studies: list[list[list[Any]]] = []
    for path in sorted(recorded_dir.glob(f"*_{budget}.json")):
        data = json.loads(path.read_text())
        if data.get("schema") != "squeezelab-study-results":
            continue  # the cost sample and other accounts beside the results
        cells = []
        for c in sorted(data["cells"], key=lambda c: c["index"]):
            cost = cell_core_seconds(c)  # done or failed: both took their time
            if cost is None:
                continue
            kind = _kind(c.get("machine") or {})
            seconds = cost[0] * rerun_by_kind[kind] / recorded_by_kind[kind] \
                if kind in recorded_by_kind else None
            name = f"{data['study']}/{c['name']}"
            cells.append([name, seconds, _source_names(data["study"], c)])
        studies.append(cells)
    # every scaled cell, for a study none of whose cells the sample's kinds cover
    sampled = [cell[1] for cells in studies for cell in cells if cell[1] is not None]
    unsampled = []
    for cells in studies:
        known = [cell[1] for cell in cells if cell[1] is not None]
        for cell in cells:
            if cell[1] is None:
                cell[1] = statistics.mean(known or sampled)
                unsampled.append(cell[0])
    return [[tuple(cell) for cell in cells] for cells in studies], unsampled


def schedule_seconds(groups: list[list[tuple[str, float, list[str]]]], workers: int) -> float:
    """When ``workers`` workers end ``groups``' cells, each taking the first cell in order
    whose sources have ended whenever it is free (as ``squeezelab study --jobs`` does; one
    group is one study's cells, several groups one pool)."""
    pending = [c for g in groups for c in g]
    ended: set[str] = set()
    running: list[tuple[float, str]] = []
    now = 0.0
    while pending or running:
        while len(running) < workers:
            ready = next((c for c in pending if all(s in ended for s in c[2])), None)
            if ready is None:
                break
            pending.remove(ready)
            running.append((now + ready[1], ready[0]))
        if not running:
            raise ValueError(f"cells wait for sources that never run: {pending[0][0]}")
        running.sort()
        now, name = running.pop(0)
        ended.add(name)
    return now


def estimate(recorded_dir: Path, budget: str, sample_path: Path, workers: int
             ) -> dict[str, Any]:
    """The working day estimated from the recorded cells (no run): their seconds scaled to a
    quiet machine by the cost sample, scheduled on ``workers`` workers one study after
    another and as one pool."""
    studies, unsampled = _scaled_cells(recorded_dir, budget,
                                       json.loads(sample_path.read_text()))
    one_core = sum(c[1] for g in studies for c in g)
    after = sum(schedule_seconds([g], workers) for g in studies)
    pool = schedule_seconds(studies, workers)
    return {"estimate": True, "cost_sample": str(sample_path), "workers": workers,
            "cells": sum(len(g) for g in studies), "one_core_hours": one_core / 3600,
            "evenly_shared_hours": one_core / workers / 3600,
            "one_study_after_another_hours": after / 3600, "one_pool_hours": pool / 3600,
            "target_hours": TARGET_HOURS,
            "counted_as_their_studys_mean": unsampled}


def _measured_cells(day_dirs: list[Path], budget: str
                    ) -> tuple[list[list[tuple[str, float, list[str]]]], dict[str, str]]:
    """Each study's ended cells (done or failed) in plan order as (name, wall seconds, source
    names), read from the cell records of a day's folders (an out-root or a ``--keep``
    folder: ``<study>/<budget>/cells/*.json``); a study in a later folder replaces the same
    study of an earlier one (a study rerun at a changed budget). Second: which folder each
    study came from."""
    from squeezelab.workflows.studies.results import cell_seconds

    chosen: dict[str, Path] = {}
    for folder in day_dirs:
        cells_dirs = sorted(folder.glob(f"*/{budget}/cells"))
        if not cells_dirs:
            raise ValueError(f"--replay {folder}: no <study>/{budget}/cells/ folder in it "
                             "(expected a working day's out-root or --keep folder)")
        for cells_dir in cells_dirs:
            chosen[cells_dir.parents[1].name] = cells_dir
    studies = []
    for study in sorted(chosen):  # the order the day's recipes are given in, as the pool takes them
        records = [json.loads(p.read_text()) for p in chosen[study].glob("*.json")]
        cells = []
        for c in sorted(records, key=lambda c: c["index"]):
            seconds = cell_seconds(c)
            if c.get("status") not in ("done", "failed") or seconds is None:
                continue
            cells.append((f"{study}/{c['name']}", seconds, _source_names(study, c)))
        studies.append(cells)
    return studies, {study: str(path.parents[1]) for study, path in sorted(chosen.items())}


def replay(day_dirs: list[Path], budget: str, workers: int) -> dict[str, Any]:
    """The day as one uninterrupted pool of the cells measured in it (no run): each cell's
    own wall seconds, scheduled on ``workers`` workers as ``squeezelab study --jobs`` takes
    them. What it leaves out, beside a measured day, is the pieces' cost: each piece's last
    cells leave a core idle, and a cell interrupted at a piece's end redoes its last epoch."""
    studies, sources = _measured_cells(day_dirs, budget)
    one_core = sum(c[1] for g in studies for c in g)
    pool = schedule_seconds(studies, workers)
    # both in the studies' sorted order: the names need not be parsed back out of the cells'
    per_study = {study: sum(c[1] for c in g) / 3600 for study, g in zip(sources, studies)}
    return {"replay": True, "day_dirs": [str(d) for d in day_dirs], "studies_from": sources,
            "budget": budget, "workers": workers, "cells": sum(len(g) for g in studies),
            "one_core_hours": one_core / 3600, "per_study_one_core_hours": per_study,
            "evenly_shared_hours": one_core / workers / 3600, "one_pool_hours": pool / 3600,
            "target_hours": TARGET_HOURS, "met": pool <= TARGET_HOURS * 3600}


def _plans(recipes: list[str], budget: str, out_root: Path, overrides: list[str]
           ) -> list[Any] | None:
    """Each recipe's plan under ``out_root`` as the study command makes it, or None where one
    cannot be made (the study command then says why, and the piece records its failure)."""
    from squeezelab.config import parse_key_values
    from squeezelab.workflows.studies import StudyError, plan_study

    try:
        values = parse_key_values(",".join(overrides), "--set")
        return [plan_study(r, budget, overrides=values, out_root=out_root) for r in recipes]
    except (StudyError, OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help="the day's study recipes (default: every "
                        "one in recipes/studies/)")
    parser.add_argument("--only", action="append", default=[], metavar="RECIPE",
                        help="this piece runs only this one of the day's studies (repeat for "
                        "several); the account still waits for all of them")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the day's durable part (pieces, ended cells' records, speed "
                        "pins) in DIR, and restore it from there into an out-root that lacks it")
    parser.add_argument("--out-root", type=Path, default=None,
                        help="the studies' folders go in OUT_ROOT/<study>/<budget>; the pieces "
                        f"in OUT_ROOT/{PIECES_FILE}")
    parser.add_argument("--budget", default="cpu", choices=("smoke", "cpu", "full"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="passed on to squeezelab study")
    parser.add_argument("--recorded", type=Path, default=RECORDED,
                        help="folder of the recorded <study>_<budget>.json results")
    parser.add_argument("--estimate", type=Path, default=None, metavar="COST_SAMPLE",
                        help="run nothing: estimate the day from the recorded cells, scaled by "
                        "this cost sample (benchmarks/study_cost_sample.py's JSON) and "
                        "scheduled one study after another and as one pool")
    parser.add_argument("--replay", type=Path, action="append", default=[], metavar="DAY_DIR",
                        help="run nothing: schedule the cells measured in this day's folder "
                        "(out-root or --keep folder) as one uninterrupted pool; repeat it, and "
                        "a later folder's study replaces an earlier one's")
    parser.add_argument("--output", default=None,
                        help="the account's JSON (default: benchmarks/results/"
                        "study_working_day.json)")
    args = parser.parse_args(argv)
    if args.estimate is not None:
        result = estimate(args.recorded, args.budget, args.estimate, args.jobs)
        print(f"{result['cells']} recorded cells, {result['one_core_hours']:.2f} h of one core "
              f"scaled: {result['one_study_after_another_hours']:.2f} h one study after "
              f"another, {result['one_pool_hours']:.2f} h as one pool, on {args.jobs} workers")
        write_result("study_working_day_estimate", result, args.output)
        return 0
    if args.replay:
        try:
            result = replay(args.replay, args.budget, args.jobs)
        except ValueError as err:
            parser.error(str(err))
        print(f"{result['cells']} measured cells, {result['one_core_hours']:.2f} h of one core: "
              f"{result['one_pool_hours']:.2f} h as one pool on {args.jobs} workers (target "
              f"{TARGET_HOURS:g} h: {'met' if result['met'] else 'not met'})")
        write_result("study_working_day_replay", result, args.output)
        return 0
    if args.out_root is None:
        parser.error("--out-root is needed to run the studies")
    recipes = args.recipes or sorted(
        os.path.relpath(p) for p in (ROOT / "recipes" / "studies").glob("*.yaml"))
    extra = [f"--set={value}" for value in args.overrides]
    names = study_names(recipes)
    run = recipes
    if args.only:
        by_path = {Path(r).resolve(): r for r in recipes}
        unknown = [r for r in args.only if Path(r).resolve() not in by_path]
        if unknown:
            parser.error(f"--only {unknown[0]}: not one of the day's recipes "
                         f"({', '.join(recipes)})")
        run = [by_path[Path(r).resolve()] for r in args.only]
    plans = _plans(recipes, args.budget, args.out_root, args.overrides)
    on_write = None
    if plans is not None:
        if args.keep is not None:
            restored = restore_state(plans, args.out_root, args.keep)
            if restored:
                print(f"restored {restored} ended cell(s) from {args.keep}")
            on_write = lambda: keep_state(plans, args.out_root, args.keep)  # noqa: E731
        from squeezelab.workflows.studies.runner import merge_study

        for plan in plans:  # every study of the day on file, the ones this piece leaves too
            merge_study(plan)
    piece = run_piece(study_command(run, args.budget, args.jobs, args.out_root, extra),
                      args.out_root, args.budget, names=names, on_write=on_write)
    print(f"piece: {piece['wall_seconds']:.0f} s, exit status {piece['exit_code']}, cells "
          f"ended {piece['cells_ended_before']} -> {piece['cells_ended_after']} of "
          f"{piece['cells_total']}")
    counts = study_counts(args.out_root, args.budget, names)
    if piece["exit_code"] != 0 or names is None or any(
            n not in counts or counts[n]["pending"] for n in names):
        pieces = json.loads((args.out_root / PIECES_FILE).read_text())
        print(f"not finished: {sum(p['wall_seconds'] for p in pieces) / 3600:.2f} h in "
              f"{len(pieces)} piece(s) so far; run the same command again to go on")
        return 1
    result = account(args.out_root, args.budget, args.recorded, names)
    top1 = result["top1_against_recorded"]
    print(f"all {sum(s['counts']['total'] for s in result['studies'])} cells ended: "
          f"{result['wall_hours']:.2f} h in {len(result['pieces'])} piece(s) (target "
          f"{TARGET_HOURS:g} h: {'met' if result['met'] else 'not met'}); top-1 equal to the "
          f"recorded cell in {top1['same_cpu_equal']} of {top1['same_cpu_cells']} cells "
          "recorded on this kind of CPU")
    write_result("study_working_day", result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
