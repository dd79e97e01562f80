"""Several cells at once on this machine: ``squeezelab study RECIPE... --jobs N``.

N worker processes (``squeezelab study ... --worker``, each with the cores divided among them
as its intra-op threads) share the studies' folders the way separate shells would: each claims
the next cell no live process holds (``sharing.claim_cell``), and a cell whose source cell
another worker is running waits for it instead of being skipped (``runner.run_studies``'
``wait_for_sources``). With several recipes the workers take the cells of all of them as one
pool (``runner.run_studies``): a worker with nothing to start in one study -- its last cell
running elsewhere, or every cell left waiting for a source cell being trained -- goes on to the
next study's cells instead of waiting, so the cores stay busy from the first cell to the last
(run one study after another, every study's tail and every wait for a source leave a core
idle). This process relays their lines, prefixed with the worker's number, and merges the
results when they are done. Whether a grid finishes sooner as N cells of one thread than one
cell at a time on N threads depends on how well one small run keeps the cores busy; the cells
record their images per second and CPU time, so the report's cost table shows it.

Speed settings: where a study's cells leave precision and memory layout to the autotune, this
process times the first such cell's candidates itself, with a worker's threads and before any
worker starts (``pin_speeds``), and keeps the choice as the study's (``sharing.keep_speed``):
no autotune is timed while another run loads the cores, and every cell of a study trains under
the same numerics. A cell interrupted before any pin was kept resumes with the settings its run
chose, so a study with such a run pins that choice instead of timing again. A cell whose data
or model cannot be built stops the command here, before any worker starts, with that error.

Ctrl-C (or SIGINT to this process) is passed on to every worker (each runs in a session of its
own, so the terminal's signal does not reach it twice): each saves its cell's checkpoint, and
the same command resumes them all.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from squeezelab.workflows.studies.errors import StudyError
from squeezelab.workflows.studies.recipe import Cell
from squeezelab.workflows.studies.registry import get_cell_kind
from squeezelab.workflows.studies.runner import StudyPlan, merge_study, studies_argv
from squeezelab.workflows.studies.sharing import keep_speed, pinned_speed, remember_speed

MAX_NAMED = 8  # the most cells the pool names when it says which ended earlier


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """Intra-op threads for each of ``jobs`` workers: the cores shared out, at least one."""
    return max(1, (cores or available_cores()) // jobs)


def _first_cell_to_tune(plan: StudyPlan) -> Cell | None:
    """The first cell still to run whose settings leave precision or memory layout to the
    autotune and whose data is there, where the study has no pinned choice yet on this
    machine kind; None when there is nothing to pin."""
    if pinned_speed(plan) is not None:
        return None
    for c in plan.cells:
        if plan.ended_record(c) is not None:
            continue
        if getattr(c.settings, "precision", None) == "auto" or (
                hasattr(c.settings, "channels_last") and c.settings.channels_last is None):
            if get_cell_kind(c.kind).missing_data(c.settings) is None:
                return c
    return None


def pin_speeds(plans: Sequence[StudyPlan], threads: int,
               log: Callable[[str], None]) -> None:
    """For each study that leaves speed settings to the autotune and has no choice pinned on
    this machine kind: time its first such cell's candidates here, on ``threads`` intra-op
    threads as a worker would, and pin the choice (``<out>/speed.json``)."""
    import torch

    from squeezelab.train.loop import choose_run_speed

    before = torch.get_num_threads()
    try:
        for plan in plans:
            # an interrupted cell resumes with what its own autotune chose: that is the pin
            for c in plan.cells:
                if pinned_speed(plan) is None and (plan.runs_dir / c.name).is_dir():
                    remember_speed(plan, plan.runs_dir / c.name)
            cell = _first_cell_to_tune(plan)
            if cell is None:
                continue
            torch.set_num_threads(threads)
            tuned = choose_run_speed(cell.settings)
            if keep_speed(plan, tuned, chosen_by=cell.name, timed="before the workers started"):
                log(f"{plan.study.study}: speed settings {tuned['precision']}"
                    f"{', channels_last' if tuned['channels_last'] else ''} (timed on "
                    f"{cell.name}, {threads} thread(s))")
    finally:
        torch.set_num_threads(before)


def _relay(k: int, stream: Any, log: Callable[[str], None], lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            log(f"[{k}] {line.rstrip()}")


def run_study_jobs(plan: StudyPlan, jobs: int, **kwargs: Any) -> dict[str, Any]:
    """``run_studies_jobs`` of one study; returns its merged results."""
    return run_studies_jobs([plan], jobs, **kwargs)[0]


def run_studies_jobs(plans: Sequence[StudyPlan], jobs: int, *,
                     log: Callable[[str], None] | None = None,
                     program: list[str] | None = None,
                     cores: int | None = None) -> list[dict[str, Any]]:
    """Run ``plans`` (one study, or several as one pool of cells) with ``jobs`` worker
    processes (see the module docstring); returns each study's merged results. ``program``:
    how to call squeezelab (default: this Python, ``-m squeezelab``); ``cores``: the cores to
    share out (default: those this process may use). A worker that ends with an error does not
    stop the others; once all have ended, the results are merged and a StudyError names it.
    Raises KeyboardInterrupt after the workers have saved and stopped on a Ctrl-C."""
    if not isinstance(jobs, int) or jobs < 1:
        raise StudyError(f"--jobs must be a whole number >= 1, got {jobs!r}")
    log = log or (lambda line: print(line, flush=True))
    threads = threads_per_job(jobs, cores)
    argv = [*studies_argv(plans, program or [sys.executable, "-m", "squeezelab"]), "--worker"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    names = ", ".join(p.study.study for p in plans)
    log(f"{names}: {sum(len(p.cells) for p in plans)} cells, {jobs} worker(s) of {threads} "
        f"thread(s) each")
    for plan in plans:  # said once here: the workers pass these cells over without a line
        ended = [c.name for c in plan.cells if plan.ended_record(c) is not None]
        if ended:  # named where they are few; a long grid's list would bury the pool's lines
            listed = f": {', '.join(ended)}" if len(ended) <= MAX_NAMED else ""
            log(f"{plan.study.study}: {len(ended)} of {len(plan.cells)} cells ended in an "
                f"earlier run (skipped){listed}")
    lock = threading.Lock()
    workers: list[subprocess.Popen] = []
    relays: list[threading.Thread] = []

    def merge_all() -> list[dict[str, Any]]:
        return [merge_study(p) for p in plans]

    def start(k: int) -> None:
        # a session of its own: a Ctrl-C at the terminal reaches this process only, which
        # passes exactly one SIGINT on (a second one would stop a worker without saving)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, env=env, start_new_session=True)
        relay = threading.Thread(target=_relay, args=(k, proc.stdout, log, lock), daemon=True)
        relay.start()
        workers.append(proc)
        relays.append(relay)

    if jobs > 1:
        pin_speeds(plans, threads, log)
    try:
        for k in range(1, jobs + 1):
            start(k)
        codes = [proc.wait() for proc in workers]
    except KeyboardInterrupt:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # each saves its cell's checkpoint
        for proc in workers:
            proc.wait()
        for relay in relays:
            relay.join(timeout=5)
        merge_all()
        raise
    for relay in relays:
        relay.join(timeout=5)
    results = merge_all()
    failed = [f"worker {k} with exit status {code}" for k, code in enumerate(codes, 1) if code]
    if failed:
        where = ", ".join(str(p.results_path) for p in plans)
        raise StudyError(f"{', '.join(failed)} ended early (its lines above say why); the "
                         f"finished cells are merged in {where}, and the same command runs "
                         "the rest")
    return results


__all__ = ["available_cores", "pin_speeds", "run_studies_jobs", "run_study_jobs",
           "threads_per_job"]
