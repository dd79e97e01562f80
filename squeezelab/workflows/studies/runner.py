"""Running a study: its cells one after another (or one, ``--cell K``), resumably, and the
merged results JSON (results.py) rebuilt from whatever cells have finished.

* A finished cell (its record in ``<out>/cells/``) is skipped on the next run, after checking
  that the recipe still asks for the same settings (a changed recipe is an error, not a silent
  mix of two experiments); an interrupted cell resumes from its run folder's last checkpoint.
* A cell whose data is missing is recorded as skipped with the reason, and tried again on the
  next run; a cell that ends in one of its kind's ``failures`` (a diverged training) is
  recorded as failed and the study goes on. Delete a cell's record to run it again.
* Cells are independent runs, so a study also spreads over machines: ``cell_commands`` gives
  one command per cell (a Slurm array, GNU parallel, a shell loop), each writes its own record,
  and every run, or ``merge_study`` alone, rebuilds the merged JSON from the records present.
  A process claims a cell before running it (``<out>/cells/<cell>.lock``, created
  exclusively), so two processes on one folder (two shells, an array job started twice, a
  shell loop beside a whole-study run) never run the same cell at once: the second skips it
  and says who holds it. A claim left by a process that died on this host is taken over; one
  from another host is left alone, and its message says to delete the file if that run is gone.
* Speed settings are pinned per study: the first cell whose run autotunes precision and memory
  layout keeps its choice in ``<out>/speed.json`` (per machine kind; under ``--jobs`` the
  parent process times that cell's candidates before any worker starts), and every later
  cell that leaves them to the autotune uses it, so the cells of one study train under the
  same numerics whatever the machine's load when each would have timed its candidates.
* ``run_studies`` takes several studies' cells as one pool, in order: a cell that waits for a
  source another process is running is passed over for the next one that can start, in any
  of the studies; after each cell it ran, a process looks first at the cells left waiting.
* A cell that starts from another cell's model (a cell reference, recipe.py) runs after it: the
  plan lists referenced cells first, so a whole run does them first; a cell whose source did
  not finish (failed, skipped) is skipped with the reason and tried again next time, and
  ``--cell K`` of a cell whose source has not finished is refused, naming the cell to run
  first. The record says which checkpoint each reference read and that cell's top-1
  (``sources``).
"""
from __future__ import annotations

import json
import shlex
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from squeezelab.config import parse_value
from squeezelab.cputime import cpu_seconds
from squeezelab.workflows.studies.model_cells import source_checkpoint
from squeezelab.workflows.studies.recipe import (
    BUDGETS,
    Cell,
    StudyConfig,
    StudyError,
    expand_study,
    load_study,
)
from squeezelab.workflows.studies.registry import CellContext, CellInterrupted, get_cell_kind
from squeezelab.workflows.studies.results import (
    SCHEMA,
    SCHEMA_VERSION,
    cell_seconds,
    config_differences,
    file_sha256,
    git_state,
    group_records,
    machine,
    now,
    read_record,
    settings_sha256,
    with_ours,
    write_json,
)
from squeezelab.workflows.studies.sharing import (
    claim_cell,
    live_holder,
    pinned_speed,
    remember_speed,
)

DEFAULT_OUT_ROOT = Path("runs") / "studies"
ENDED = ("done", "failed")  # a cell with a record in either state is not run again


@dataclass
class StudyPlan:
    """A study recipe under one budget: its cells and where their outputs go."""

    recipe: Path
    study: StudyConfig
    budget: str
    out_dir: Path
    results_path: Path
    cells: list[Cell]
    seeds: list[int] | None = None  # as given on the command line (None: the recipe's)
    overrides: dict[str, Any] = field(default_factory=dict)
    results_given: bool = False  # --results was given (the cell commands repeat it)

    @property
    def cells_dir(self) -> Path:
        return self.out_dir / "cells"

    @property
    def runs_dir(self) -> Path:
        return self.out_dir / "runs"

    def cell_file(self, cell: Cell) -> Path:
        return self.cells_dir / f"{cell.name}.json"

    def ended_record(self, cell: Cell) -> dict[str, Any] | None:
        """The cell's record where it has ended (done or failed), else None: such a cell is
        not run again."""
        record = read_record(self.cell_file(cell))
        return record if record is not None and record["status"] in ENDED else None

    def claim_file(self, cell: Cell) -> Path:
        return self.cells_dir / f"{cell.name}.lock"

    def select(self, cell: int | str | None) -> list[Cell]:
        """The cells to run: all of them, the ``cell``-th (1-based, as ``--list`` numbers
        them) or the one named ``cell``."""
        if cell is None:
            return list(self.cells)
        text = str(cell)
        if text.isdigit():
            k = int(text)
            if not 1 <= k <= len(self.cells):
                raise StudyError(f"--cell {k}: {self.recipe} has cells 1..{len(self.cells)} "
                                 f"under budget {self.budget}")
            return [self.cells[k - 1]]
        for c in self.cells:
            if c.name == text:
                return [c]
        names = ", ".join(c.name for c in self.cells[:6])
        raise StudyError(f"--cell {text!r}: {self.recipe} has no such cell under budget "
                         f"{self.budget} (give a number 1..{len(self.cells)} or a name such as "
                         f"{names})")


def plan_study(recipe: str | Path, budget: str = "cpu", *, out: str | Path | None = None,
               results: str | Path | None = None, seeds: Sequence[int] | None = None,
               overrides: Mapping[str, Any] | None = None,
               out_root: str | Path | None = None) -> StudyPlan:
    """Read ``recipe`` and expand it under ``budget``. ``out``: the study's folder (default
    ``<out_root>/<study>/<budget>``, ``out_root`` by default ``runs/studies``); ``results``:
    the merged JSON (default ``<out>/results.json``); ``seeds`` and ``overrides`` (``--set``)
    as in ``expand_study``."""
    if budget not in BUDGETS:
        raise StudyError(f"budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    recipe = Path(recipe)
    study = load_study(recipe)
    out_dir = Path(out) if out is not None else \
        Path(out_root if out_root is not None else DEFAULT_OUT_ROOT) / study.study / budget
    cells = expand_study(study, budget, run_root=out_dir / "runs",
                         seeds=list(seeds) if seeds is not None else None,
                         overrides=overrides, source=str(recipe))
    return StudyPlan(recipe, study, budget, out_dir,
                     Path(results) if results is not None else out_dir / "results.json",
                     cells, list(seeds) if seeds is not None else None, dict(overrides or {}),
                     results is not None)


def _base_record(plan: StudyPlan, cell: Cell, status: str) -> dict[str, Any]:
    return {"index": cell.index, "name": cell.name, "kind": cell.kind, "status": status,
            "variants": cell.variants, "seed": cell.seed, "budget": plan.budget,
            "config": cell.config_dict()}


def _stamp(record: dict[str, Any], plan: StudyPlan) -> dict[str, Any]:
    commit, dirty = git_state()
    record.update(machine=machine(), git_commit=commit, git_dirty=dirty, finished_at=now(),
                  recipe=str(plan.recipe))
    return record


def _default_settings(cell: Cell) -> dict[str, Any]:
    """The defaults of ``cell``'s settings class (empty where it has no default instance)."""
    try:
        return type(cell.settings)().to_dict()
    except (TypeError, ValueError):
        return {}


def _check_same_experiment(plan: StudyPlan, cell: Cell, record: dict[str, Any]) -> None:
    # a reference is the same whatever folder the study's cells sit in: compare the cells named
    recorded = {k: v.get("cell") for k, v in (record.get("sources") or {}).items()}
    differences = config_differences(
        {k: v for k, v in record.get("config", {}).items() if k not in recorded},
        {k: v for k, v in cell.config_dict().items() if k not in cell.references},
        defaults=_default_settings(cell))
    differences += [f"{k}: {{cell: {recorded.get(k)!r}}} != {{cell: {cell.references.get(k)!r}}}"
                    for k in sorted(set(recorded) | set(cell.references))
                    if recorded.get(k) != cell.references.get(k)]
    if record.get("kind") != cell.kind:
        differences.insert(0, f"kind: {record.get('kind')!r} != {cell.kind!r}")
    if differences:
        raise StudyError(
            f"cell {cell.name}: its recorded result {plan.cell_file(cell)} was made with other "
            f"settings than {plan.recipe} asks for now ({'; '.join(differences[:4])}); choose "
            "another --out, or delete that file (and the cell's run folder) to run it again")


def import_results(plan: StudyPlan, paths: Sequence[str | Path],
                   log: Callable[[str], None] | None = None) -> int:
    """Copy the finished cells (done or failed) of other results JSONs of the same study and
    budget (another machine's, or one committed to the repository) into ``plan``'s cells
    folder, so a run here does only the rest; returns how many were copied.

    A cell that already has a finished record here keeps it; a record made with other
    settings than the recipe asks for now is an error (``_check_same_experiment``), as for a
    cell run here. The copy says where it came from (``imported_from``); its run folder stays
    where it was made, so a cell that starts from an imported cell's model waits until that
    folder is copied into ``<out>/runs/``."""
    log = log or (lambda line: print(line, flush=True))
    by_name = {c.name: c for c in plan.cells}
    copied = 0
    for path in map(Path, paths):
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise StudyError(f"--import {path}: not a readable results JSON ({e})") from None
        if not isinstance(results, dict) or not isinstance(results.get("cells"), list):
            raise StudyError(f"--import {path}: not a study's results JSON (no cells list)")
        theirs = (results.get("study"), results.get("budget"))
        if theirs != (plan.study.study, plan.budget):
            raise StudyError(f"--import {path} holds study {theirs[0]!r} at budget "
                             f"{theirs[1]!r}, not {plan.study.study!r} at {plan.budget!r}")
        for record in results["cells"]:
            if not isinstance(record, dict) or record.get("status") not in ENDED:
                continue
            c = by_name.get(record.get("name"))
            if c is None:
                log(f"{path}: cell {record.get('name')!r} is not in this study's plan: left out")
                continue
            target = plan.cell_file(c)
            if plan.ended_record(c) is not None:
                log(f"cell {c.index} {c.name}: finished here already, the record here is kept")
                continue
            _check_same_experiment(plan, c, record)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_json(target, {**{k: v for k, v in record.items() if k != "index"},
                                "imported_from": str(path)})
            copied += 1
            log(f"cell {c.index} {c.name}: {record['status']}, imported from {path}")
    return copied


def _sources(plan: StudyPlan, cell: Cell) -> tuple[dict[str, Any], Cell | None, str]:
    """What each reference of ``cell`` reads (the cell, its checkpoint and its top-1), or the
    first referenced cell that has not finished and why (then the cell cannot run yet)."""
    by_name = {c.name: c for c in plan.cells}
    sources: dict[str, Any] = {}
    for key, name in cell.references.items():
        target = by_name[name]
        record = read_record(plan.cell_file(target))
        status = record["status"] if record else "pending"
        if status != "done":
            why = f" ({record['reason']})" if record and record.get("reason") else ""
            return sources, target, f"its {key} is cell {target.index} {name}, which is " \
                f"{status}{why}"
        if record.get("imported_from") and not (plan.runs_dir / name).is_dir():
            return sources, target, (
                f"its {key} is cell {target.index} {name}, imported from "
                f"{record['imported_from']} without its run folder: copy {record.get('run_dir')} "
                f"to {plan.runs_dir / name}, or delete {plan.cell_file(target)} to train it here")
        metrics = record.get("metrics") or {}
        sources[key] = {"cell": name, "index": target.index,
                        "path": str(source_checkpoint(plan.runs_dir / name)),
                        # the best epoch's: the checkpoint a run folder stands for
                        "top1": metrics.get("best_test_top1", metrics.get("test_top1")),
                        "test_top1": metrics.get("test_top1"),
                        "test_protocol": metrics.get("test_protocol")}
    return sources, None, ""


def _run_cell(plan: StudyPlan, c: Cell, kind: Any, sources: dict[str, Any],
              ctx: CellContext, log: Callable[[str], None], where: str) -> None:
    """Run one claimed cell and write its record (done, or failed with the reason)."""
    path = plan.cell_file(c)
    existing = plan.ended_record(c)
    if existing is not None:
        # another process finished it between our first look and the claim
        log(f"{where}: {existing['status']} meanwhile in another process, skipped")
        return
    log(f"{where}: running ({c.kind})")
    t0, c0 = time.perf_counter(), cpu_seconds()
    try:
        measured = kind.run(c.settings, ctx)
    except CellInterrupted:
        merge_study(plan)
        log(f"{where}: interrupted; run the same command again to resume it")
        raise KeyboardInterrupt from None
    except kind.failures as e:
        record = {**_base_record(plan, c, "failed"), "reason": f"{type(e).__name__}: {e}",
                  "seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds() - c0,
                  "published": with_ours(c.published, None)}
        if sources:
            record["sources"] = sources
        write_json(path, _stamp(record, plan))
        log(f"{where}: failed: {e}")
        return
    record = {**_base_record(plan, c, "done"), **measured,
              "published": with_ours(c.published, measured.get("metrics")),
              "seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds() - c0}
    if sources:
        record["sources"] = sources
    write_json(path, _stamp(record, plan))
    log(f"{where}: done: {describe_record(record)}")


@dataclass
class _CellPass:
    """One study's ``cells`` as ``run_study`` goes over them: each is skipped, deferred (its
    source is being run elsewhere) or claimed and run. ``single``: one cell was asked for
    (--cell K), whose sources are then the user's to run. ``cache``: what the cells' runs
    keep between them (decoded data), shared by the studies of one process."""

    plan: StudyPlan
    cells: list[Cell]
    single: bool
    progress: bool
    log: Callable[[str], None]
    wait_for_sources: bool
    cache: dict[str, Any] = field(default_factory=dict)
    # say so for each cell finished or held elsewhere; a --jobs worker does not (its siblings
    # hold those cells, and the pool says once how many were finished before it started)
    log_passes: bool = True
    host: str = field(default_factory=socket.gethostname)
    prefix: str = ""  # before every line: the study's name where several share a pool
    deferred: list[Cell] = field(default_factory=list)  # waiting, in this scan so far
    told_waiting: list[str] = field(default_factory=list)  # the waiting cells last logged

    def attempt(self, c: Cell) -> str:
        """Run ``c`` if it can run now (or say why not). Returns "ran" when this process ran
        it, "deferred" when it waits for a source another process is running (or that waits
        itself), else "passed" (finished before, skipped, or held by another process)."""
        plan, log = self.plan, self.log
        where = f"{self.prefix}cell {c.index}/{len(plan.cells)} {c.name}"
        path = plan.cell_file(c)
        existing = plan.ended_record(c)
        if existing is not None:
            _check_same_experiment(plan, c, existing)
            # a process that does not wait for others looks at each cell once, at its start
            if self.log_passes:
                log(f"{where}: {existing['status']} in an earlier run, skipped"
                    if not self.wait_for_sources
                    else f"{where}: {existing['status']} already (another process or an "
                    "earlier run), skipped")
            return "passed"
        sources, waiting, why = _sources(plan, c)
        if waiting is not None:
            if self.single:  # --cell K: running its sources is the user's call
                raise StudyError(
                    f"cell {c.index} {c.name} starts from another cell's model and cannot run "
                    f"yet: {why}. Run that cell first (--cell {waiting.index}), or the whole "
                    "study, which runs every cell's sources before it")
            if self.wait_for_sources and (waiting in self.deferred or live_holder(
                    plan.claim_file(waiting), self.host) is not None):
                self.deferred.append(c)
                return "deferred"
            self._skip(c, path, f"waits for its source: {why}", where)
            return "passed"
        kind = get_cell_kind(c.kind)
        reason = kind.missing_data(c.settings)
        if reason is not None:
            self._skip(c, path, reason, where)
            return "passed"
        claim, holder = claim_cell(plan, c)
        if claim is None:
            if self.log_passes:
                log(f"{where}: being run by {holder}: skipped here")
            return "passed"
        ctx = CellContext(c.name, plan.runs_dir / c.name, self.cache, self.progress,
                          speed=pinned_speed(plan))
        try:
            _run_cell(plan, c, kind, sources, ctx, log, where)
            remember_speed(plan, ctx.run_dir)
        finally:
            claim.unlink(missing_ok=True)
        return "ran"

    def _skip(self, c: Cell, path: Path, reason: str, where: str) -> None:
        write_json(path, _stamp({**_base_record(self.plan, c, "skipped"), "reason": reason,
                                 "published": with_ours(c.published, None)}, self.plan))
        self.log(f"{where}: skipped: {reason}")


def run_study(plan: StudyPlan, cell: int | str | None = None, *, progress: bool = True,
              log: Callable[[str], None] | None = None, wait_for_sources: bool = False,
              poll_seconds: float = 5.0) -> dict[str, Any]:
    """Run ``plan``'s cells (all, or the one ``cell`` names) that have no result yet, then
    rebuild and write the merged results; returns them. ``progress``: the runs' own progress
    bars and epoch lines. A Ctrl-C inside a cell saves its checkpoint, merges what is done and
    re-raises KeyboardInterrupt: the same command resumes.

    A cell whose source cell has not finished is skipped (recorded as waiting for it), unless
    ``wait_for_sources``: then, when another process is running that source (or it waits
    itself), the cell is tried again every ``poll_seconds`` until the source is done or has
    failed -- how the workers of ``squeezelab study --jobs N`` share one study
    (``parallel.py``)."""
    passes = [_CellPass(plan, plan.select(cell), cell is not None, progress,
                        log or _print_line, wait_for_sources)]
    return _run_passes(passes, poll_seconds)[0]


def run_studies(plans: Sequence[StudyPlan], *, progress: bool = True,
                log: Callable[[str], None] | None = None, wait_for_sources: bool = False,
                poll_seconds: float = 5.0, log_passes: bool = True) -> list[dict[str, Any]]:
    """Run several studies as one pool of cells, in the order given: a cell that waits for
    a source another process is running is passed over for the next cell that can run, in
    this study or a later one, so ``--jobs`` workers never sit idle while any cell of any
    study can start (``run_study``'s arguments otherwise). ``log_passes=False``: no line for
    a cell finished or held by another process (a ``--jobs`` worker's siblings). Returns each
    study's merged results, in order."""
    log, cache = log or _print_line, {}
    passes = [_CellPass(plan, plan.select(None), False, progress, log, wait_for_sources, cache,
                        prefix=f"{plan.study.study}: " if len(plans) > 1 else "",
                        log_passes=log_passes)
              for plan in plans]
    return _run_passes(passes, poll_seconds)


def _print_line(line: str) -> None:
    print(line, flush=True)


def _run_passes(passes: list[_CellPass], poll_seconds: float) -> list[dict[str, Any]]:
    """Attempt every pass's cells in order until none is left waiting. After each cell this
    process ran, the scan starts again from the first waiting cell, whose source may just have
    finished; cells waiting for sources other processes run are looked at again every
    ``poll_seconds``. Merges and returns each pass's study results."""
    pending = [(p, c) for p in passes for c in p.cells]
    while pending:
        waiting: list[tuple[_CellPass, Cell]] = []
        ran = False
        for p in passes:
            p.deferred = []
        for k, (p, c) in enumerate(pending):
            outcome = p.attempt(c)
            if outcome == "deferred":
                waiting.append((p, c))
            elif outcome == "ran":
                waiting += pending[k + 1:]
                ran = True
                break
        pending = waiting
        if pending and not ran:
            for p in passes:
                names = [c.name for q, c in pending if q is p]
                if names and names != p.told_waiting:  # once per change, not every poll
                    p.log(f"{p.prefix}{len(names)} cell(s) wait for sources another "
                          "process is running: " + ", ".join(names))
                p.told_waiting = names
            time.sleep(poll_seconds)
    return [merge_study(p.plan) for p in passes]


def describe_record(record: dict[str, Any]) -> str:
    """One line: test top-1/top-5, parameters, seconds, and the published value beside ours."""
    m = record.get("metrics") or {}
    parts = []
    if m.get("test_top1") is not None:
        parts.append(f"top-1 {100 * m['test_top1']:.2f}%")
    if m.get("test_top5") is not None:
        parts.append(f"top-5 {100 * m['test_top5']:.2f}%")
    if record.get("parameters") is not None:
        parts.append(f"{record['parameters']:,} parameters")
    seconds = cell_seconds(record)
    if seconds is not None:
        parts.append(f"{seconds:.0f} s")
    for p in record.get("published", []):
        parts.append(f"published {p['metric']} {p['percent']:g}% ({p.get('dataset') or '?'})")
    return ", ".join(parts)


def merge_study(plan: StudyPlan) -> dict[str, Any]:
    """Rebuild the merged results JSON from the cell records in ``plan.cells_dir`` (cells
    without one are listed as pending), write it to ``plan.results_path`` and return it."""
    records = []
    for c in plan.cells:
        record = read_record(plan.cell_file(c))
        if record is None:
            record = {**_base_record(plan, c, "pending"),
                      "published": with_ours(c.published, None)}
        else:
            # the plan numbers the cells (the file may come from a run with other --seeds)
            record = {**record, "index": c.index}
        records.append(record)
    planned = {plan.cell_file(c).name for c in plan.cells}
    unplanned = sorted(p.stem for p in plan.cells_dir.glob("*.json") if p.name not in planned) \
        if plan.cells_dir.is_dir() else []
    budget_settings, _ = plan.study.budget_values(plan.budget)
    commit, dirty = git_state()
    counts = {s: sum(r["status"] == s for r in records)
              for s in ("done", "skipped", "failed", "pending")}
    results = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "study": plan.study.study, "title": plan.study.title, "kind": plan.study.kind,
        "source": plan.study.source.to_dict() if plan.study.source else None,
        "recipe": str(plan.recipe), "recipe_sha256": file_sha256(plan.recipe),
        "recipe_settings_sha256": settings_sha256(plan.recipe),
        "budget_settings_sha256": settings_sha256(plan.recipe, plan.budget),
        "budget": plan.budget, "budget_settings": budget_settings,
        "seeds": list(dict.fromkeys(c.seed for c in plan.cells)),
        "overrides": plan.overrides,
        "published": plan.study.published.to_dict() if plan.study.published else None,
        "report": [r.to_dict() for r in plan.study.report],
        "out_dir": str(plan.out_dir), "merged_at": now(),
        "git_commit": commit, "git_dirty": dirty,
        "counts": {"total": len(records), **counts},
        "cells": records,
        "groups": group_records(records),
        "unplanned_cells": unplanned,
    }
    write_json(plan.results_path, results)
    return results


def study_argv(plan: StudyPlan, program: Sequence[str] = ("squeezelab",)) -> list[str]:
    """The ``squeezelab study`` command line that runs ``plan`` again: the same recipe,
    budget, folder, seeds and ``--set`` values (``program``: how to call squeezelab)."""
    argv = [*program, "study", str(plan.recipe), "--budget", plan.budget,
            "--out", str(plan.out_dir)]
    if plan.results_given:
        argv += ["--results", str(plan.results_path)]
    return argv + _shared_flags(plan)


def studies_argv(plans: Sequence[StudyPlan], program: Sequence[str] = ("squeezelab",)
                 ) -> list[str]:
    """The command line that runs ``plans`` again, as one command with several recipes
    (``--out-root``); one plan: ``study_argv``. The plans must be what one such command
    plans: the same budget, seeds and ``--set`` values, each in ``<root>/<study>/<budget>``
    of one root."""
    if len(plans) == 1:
        return study_argv(plans[0], program)
    first = plans[0]
    root = first.out_dir.parent.parent
    for plan in plans:
        if (plan.budget, plan.seeds, plan.overrides, plan.results_given) != (
                first.budget, first.seeds, first.overrides, False) or \
                plan.out_dir != root / plan.study.study / plan.budget:
            raise StudyError(f"{plan.recipe} is not planned as {first.recipe} is (budget, "
                             f"seeds, --set, a folder under {root}): one command cannot run "
                             "both")
    return [*program, "study", *(str(p.recipe) for p in plans), "--budget", first.budget,
            "--out-root", str(root), *_shared_flags(first)]


def _shared_flags(plan: StudyPlan) -> list[str]:
    """The flags of ``plan``'s command line that are not about its folder."""
    argv = []
    if plan.seeds is not None:
        argv += ["--seeds", *map(str, plan.seeds)]
    for key, value in plan.overrides.items():
        argv += ["--set", f"{key}={_yaml_scalar(value)}"]
    return argv


def cell_commands(plan: StudyPlan, program: str = "squeezelab") -> list[str]:
    """One shell command per cell, in plan order: each runs that cell alone (``--cell K``)
    into the same folder and merges what is there."""
    common = study_argv(plan, (program,))
    return [shlex.join([*common, "--cell", str(c.index)]) for c in plan.cells]


def merge_command(plan: StudyPlan, program: str = "squeezelab") -> str:
    """The command that merges the cells' results once they are all done."""
    return cell_commands(plan, program)[0].rsplit(" --cell ", 1)[0] + " --merge"


def _yaml_scalar(value: Any) -> str:
    """``value`` as ``--set`` reads it back: a plain string as itself where YAML reads it so,
    anything else as JSON (a YAML flow value)."""
    if isinstance(value, str) and value and parse_value(value) == value and "," not in value:
        return value
    return json.dumps(value)


def format_summary(results: dict[str, Any]) -> str:
    """The merged results as a few lines: counts, then one line per cell."""
    c = results["counts"]
    lines = [f"{results['study']} ({results['budget']}): {c['done']} done, {c['skipped']} "
             f"skipped, {c['failed']} failed, {c['pending']} pending of {c['total']} cells"]
    for r in results["cells"]:
        detail = describe_record(r) if r["status"] == "done" else r.get("reason", "")
        lines.append(f"  {r['index']:>3} {r['name']:<32} {r['status']:<8} {detail}")
    return "\n".join(lines)


__all__ = ["StudyPlan", "cell_commands", "describe_record", "format_summary", "import_results",
           "merge_command", "merge_study", "plan_study", "run_studies", "run_study",
           "studies_argv", "study_argv"]
