"""What the studies cost, the page's last table: per study the core-time its finished cells
took -- their recorded CPU time where they have it, else the CPU time of a rerun of the same
cells where one is given (``squeezelab report --costs-from``), else wall seconds times threads,
an upper bound -- and an estimate for the cells still to run. It answers "does the cpu budget
fit in a working day": divide the core-time by the cores that run cells at once."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from squeezelab.workflows.report.page import Table, Value
from squeezelab.workflows.report.values import MISSING, is_number
from squeezelab.workflows.studies.results import cell_seconds

FINISHED = ("done", "failed")  # the cells whose time was spent

#: settings that say where a cell's files went, not what it did: two runs of one cell differ
#: in them and are still the same work
PLACE_SETTINGS = frozenset({"out_dir", "run_name", "data_root", "source", "teacher",
                            "compare_with", "init_from", "progress", "log_every"})

#: how a cell's core-time was measured, in the order the table names them
MEASURES = {"cpu": "CPU time", "rerun": "a rerun's CPU time",
            "wall": "wall x threads (upper bound)"}


def core_hours_text(seconds: float) -> str:
    """Core-seconds as ``3 h 05 min`` (or ``42 min`` under an hour)."""
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def cell_core_seconds(cell: dict[str, Any]) -> tuple[float, bool] | None:
    """What one finished cell cost in core-seconds, and whether that is its measured CPU time
    (True) or an upper bound from wall time (False); None for a cell not finished.

    Where the cell recorded its CPU time (``cpu_seconds``; ``train_cpu_seconds`` summed over
    every process for a resumed one), that is its cost however busy the machine was. Older
    records have wall time only: their wall seconds times the intra-op threads they ran with
    (1 where unrecorded), the time waited for a core included. A cell resumed after an
    interruption records only the seconds of the process that finished it; its epochs' own
    seconds (``train_seconds``, summed over every process) count then."""
    if cell.get("status") not in FINISHED:
        return None
    cpu = cell.get("cpu_seconds")
    if is_number(cpu):
        trained = cell.get("train_cpu_seconds")
        return (max(float(cpu), float(trained)) if is_number(trained) else float(cpu)), True
    if not is_number(cell.get("seconds")):
        return None
    seconds = cell_seconds(cell)
    threads = (cell.get("machine") or {}).get("threads") or 1
    return float(seconds) * threads, False


def same_work(recorded: dict[str, Any], rerun: dict[str, Any]) -> bool:
    """Whether ``rerun`` is a run of the same cell as ``recorded``: the same name, budget and
    kind, on a CPU, and equal settings wherever both records hold one, the places its files
    went aside (a setting that squeezelab gained after one of them ran is missing from its
    record, and was off then)."""
    if any(recorded.get(k) != rerun.get(k) for k in ("name", "budget", "kind")):
        return False
    if (rerun.get("machine") or {}).get("gpu"):
        return False  # a GPU's run says nothing of what the cell costs on CPU cores
    a, b = recorded.get("config"), rerun.get("config")
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return a == b
    return all(a[k] == b[k] for k in a.keys() & b.keys() if k not in PLACE_SETTINGS)


def rerun_index(records: Sequence[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Finished cell records with CPU time, by (recipe file name, budget, cell name)."""
    index: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("status") in FINISHED and is_number(r.get("cpu_seconds")):
            key = (Path(str(r.get("recipe"))).name, r.get("budget"), r.get("name"))
            index.setdefault(key, []).append(r)
    return index


def rerun_of(cell: dict[str, Any], recipe: Any,
             index: dict[tuple, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The first record in ``index`` that ran the same work as ``cell`` of the study whose
    recipe is ``recipe`` (``same_work``), or None."""
    key = (Path(str(cell.get("recipe") or recipe)).name, cell.get("budget"), cell.get("name"))
    return next((r for r in index.get(key, []) if same_work(cell, r)), None)


def cell_gpu_seconds(cell: dict[str, Any]) -> float | None:
    """What one finished cell cost on its GPU: its wall seconds (over every process, for a
    resumed one), since the GPU was its for the whole run; None for a cell not finished or
    one that ran on CPU only."""
    if cell.get("status") not in FINISHED or not (cell.get("machine") or {}).get("gpu"):
        return None
    return cell_seconds(cell)


def cost_table(studies: Sequence[dict[str, Any]],
               reruns: Sequence[dict[str, Any]] = ()) -> Table:
    """What the studies cost: per study, the cells finished and the core-time they took
    (``cell_core_seconds``: measured CPU time where the cells recorded it; for a cell that
    recorded wall time only, the CPU time of the same cell in ``reruns``, cell records of
    another run of the studies, where one matches (``same_work``); else an upper bound from
    wall time), and the cells still to run estimated at the mean of the finished ones; the
    last row sums them. This is how the page answers "does the cpu budget fit in a working
    day": divide the core-time by the cores that run cells at once."""
    columns = ["study", "budget", "cells finished", "core-time of the finished", "measured as",
               "cells to run", "estimated core-time to run", "GPU time of the finished",
               "machines"]
    rows: list[list[Value]] = []
    total_spent = total_left = 0.0
    all_gpu: list[float] = []  # every GPU cell's seconds, for the last row
    total_finished = total_pending = 0
    total_measures: Counter[str] = Counter()
    index = rerun_index(reruns)
    for results in studies:
        cells = results["cells"]
        spent: list[float] = []
        measures: Counter[str] = Counter()
        rerun_machines: list[str] = []
        for cell in cells:
            cost = _cell_cost(cell, results.get("recipe"), index)
            if cost is None:
                continue
            seconds, measure, rerun = cost
            if rerun is not None and rerun.get("machine"):
                rerun_machines.append(_machine_name(rerun["machine"]) + " (rerun)")
            spent.append(seconds)
            measures[measure] += 1
        pending = sum(c["status"] == "pending" for c in cells)
        gpu = [s for s in map(cell_gpu_seconds, cells) if s is not None]
        left = pending * sum(spent) / len(spent) if spent else None
        machines = list(dict.fromkeys([_machine_name(c["machine"])
                                       for c in cells if c.get("machine")] + rerun_machines))
        rows.append([Value(str(results.get("study")), code=True),
                     Value(str(results.get("budget"))),
                     Value(f"{len(spent)} of {len(cells)}"),
                     Value(core_hours_text(sum(spent)) if spent else MISSING,
                           exact=f"{sum(spent):.0f} core-seconds"),
                     Value(_measured_as(measures)),
                     Value(str(pending)),
                     Value(MISSING if not pending else
                           core_hours_text(left) if left is not None else "unknown yet"),
                     _gpu_value(gpu),
                     Value("; ".join(machines) or MISSING)])
        total_spent += sum(spent)
        total_left += left or 0.0
        total_finished += len(spent)
        total_pending += pending
        total_measures += measures
        all_gpu += gpu
    rows.append([Value("all"), Value(MISSING),
                 Value(f"{total_finished}"), Value(core_hours_text(total_spent)),
                 Value(_measured_as(total_measures)),
                 Value(str(total_pending)), Value(core_hours_text(total_left)),
                 _gpu_value(all_gpu),
                 Value(MISSING)])
    return Table("What the studies cost", columns, rows, notes=[
        "Core-time: each finished cell's CPU time where it recorded one (every thread of "
        "its process; for a cell resumed after an interruption, its epochs' CPU time over "
        "every process), which other work on the machine does not inflate; older cells "
        "recorded wall time only, counted as wall seconds times the intra-op threads they "
        "ran with (a cell that waited for a core counts the wait, so that is an upper "
        "bound), unless a rerun of the same cell (the report's --costs-from: same recipe, "
        "budget, name and settings, on a CPU) recorded its CPU time, which then counts. The "
        "cells to run are estimated at the mean of the study's finished cells (a "
        "grid whose cells differ in size makes that rough). On a machine that runs k cells "
        "at once, one thread each, the wall time is about the core-time divided by k. A "
        "cell that trained on a GPU counts its host process's CPU time as core-time, and its "
        "wall seconds as GPU time (cells that shared one GPU each count their own)."])


def _cell_cost(cell: dict[str, Any], recipe: Any, index: dict[tuple, list[dict[str, Any]]]
               ) -> tuple[float, str, dict[str, Any] | None] | None:
    """(core-seconds, the ``MEASURES`` key saying how, the rerun counted or None) of a
    finished cell: its own CPU time, else a rerun's (``rerun_of``), else wall x threads."""
    cost = cell_core_seconds(cell)
    if cost is None:
        return None
    if cost[1]:
        return cost[0], "cpu", None
    rerun = rerun_of(cell, recipe, index)
    if rerun is not None:
        return cell_core_seconds(rerun)[0], "rerun", rerun
    return cost[0], "wall", None


def _gpu_value(seconds: list[float]) -> Value:
    if not seconds:
        return Value(MISSING)
    total = sum(seconds)
    return Value(core_hours_text(total), exact=f"{total:.0f} GPU-seconds")


def _machine_name(machine: dict[str, Any]) -> str:
    """The CPU, and the GPU where the cell had one (its cost is then mostly the GPU's)."""
    cpu = str(machine.get("cpu") or MISSING)
    return f"{cpu} + GPU {machine['gpu']}" if machine.get("gpu") else cpu


def _measured_as(measures: Counter[str]) -> str:
    """How the cells' core-time was measured: one name where they agree, else the count of
    each (``CPU time for 3, wall x threads for 1``)."""
    used = [(MEASURES[k], measures[k]) for k in MEASURES if measures[k]]
    if not used:
        return MISSING
    if len(used) == 1:
        return used[0][0]
    return ", ".join(f"{name.removesuffix(' (upper bound)')} for {n}" for name, n in used)


__all__ = ["MEASURES", "PLACE_SETTINGS", "cell_core_seconds", "cell_gpu_seconds",
           "core_hours_text", "cost_table", "rerun_index", "rerun_of", "same_work"]
