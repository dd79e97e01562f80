"""Several cells of one study at once on this machine: ``squeezelab study RECIPE --jobs N``.

N worker processes (``squeezelab study ... --worker``, each with the cores divided among them
as its intra-op threads) share the study's folder the way separate shells would: each claims
the next cell no live process holds (``sharing.claim_cell``), and a cell whose source cell
another worker is running waits for it instead of being skipped (``run_study``'s
``wait_for_sources``). This process relays their lines, prefixed with the worker's number, and
merges the results when they are done. Whether a grid finishes sooner as N cells of one thread
than one cell at a time on N threads depends on how well one small run keeps the cores busy; the
cells record their images per second and CPU time, so the report's cost table shows it.

Speed settings: where the cells leave precision and memory layout to the autotune, the first
worker starts alone, and the others only once the study's settings are pinned
(``sharing.remember_speed``: as soon as its first training run has timed the candidates) -- so
no autotune is timed while another worker loads the cores, and every cell trains under the
same numerics.

Ctrl-C (or SIGINT to this process) is passed on to every worker (each runs in a session of its
own, so the terminal's signal does not reach it twice): each saves its cell's checkpoint, and
the same command resumes them all.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from squeezelab.workflows.studies.errors import StudyError
from squeezelab.workflows.studies.results import read_record
from squeezelab.workflows.studies.runner import StudyPlan, merge_study, study_argv
from squeezelab.workflows.studies.sharing import pinned_speed, remember_speed

#: how often the first worker's runs are looked at for the autotune's choice
PIN_POLL_SECONDS = 1.0


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """Intra-op threads for each of ``jobs`` workers: the cores shared out, at least one."""
    return max(1, (cores or available_cores()) // jobs)


def _needs_speed_pin(plan: StudyPlan) -> bool:
    """Whether a cell still to run leaves precision or memory layout to the autotune while the
    study has no pinned choice yet on this machine kind."""
    if pinned_speed(plan) is not None:
        return False
    for c in plan.cells:
        record = read_record(plan.cell_file(c))
        if record is not None and record["status"] in ("done", "failed"):
            continue
        if getattr(c.settings, "precision", None) == "auto" or (
                hasattr(c.settings, "channels_last") and c.settings.channels_last is None):
            return True
    return False


def _pin_from_new_runs(plan: StudyPlan, since: float) -> bool:
    """Pin the study's speed settings from the first run started since ``since`` whose
    autotune has timed its candidates (its environment.json); True once pinned."""
    if pinned_speed(plan) is not None:
        return True
    if not plan.runs_dir.is_dir():
        return False
    for env in plan.runs_dir.glob("*/environment.json"):
        try:
            if env.stat().st_mtime < since:
                continue
            tuned = json.loads(env.read_text()).get("speed_autotune")
        except (OSError, ValueError, AttributeError):
            continue  # being written this instant: looked at again on the next poll
        if isinstance(tuned, dict) and tuned.get("timings"):
            remember_speed(plan, env.parent)
            return pinned_speed(plan) is not None
    return False


def _relay(k: int, stream: Any, log: Callable[[str], None], lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            log(f"[{k}] {line.rstrip()}")


def run_study_jobs(plan: StudyPlan, jobs: int, *, log: Callable[[str], None] | None = None,
                   program: list[str] | None = None, cores: int | None = None,
                   pin_timeout: float = 1800.0) -> dict[str, Any]:
    """Run ``plan`` with ``jobs`` worker processes (see the module docstring); returns the
    merged results. ``program``: how to call squeezelab (default: this Python, ``-m
    squeezelab``); ``cores``: the cores to share out (default: those this process may use).
    A worker that ends with an error does not stop the others; once all have ended, the
    results are merged and a StudyError names it. Raises KeyboardInterrupt after the workers
    have saved and stopped on a Ctrl-C."""
    if not isinstance(jobs, int) or jobs < 1:
        raise StudyError(f"--jobs must be a whole number >= 1, got {jobs!r}")
    log = log or (lambda line: print(line, flush=True))
    threads = threads_per_job(jobs, cores)
    argv = [*study_argv(plan, program or [sys.executable, "-m", "squeezelab"]), "--worker"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log(f"{plan.study.study}: {len(plan.cells)} cells, {jobs} worker(s) of {threads} "
        f"thread(s) each")
    lock = threading.Lock()
    workers: list[subprocess.Popen] = []
    relays: list[threading.Thread] = []

    def start(k: int) -> None:
        # a session of its own: a Ctrl-C at the terminal reaches this process only, which
        # passes exactly one SIGINT on (a second one would stop a worker without saving)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, env=env, start_new_session=True)
        relay = threading.Thread(target=_relay, args=(k, proc.stdout, log, lock), daemon=True)
        relay.start()
        workers.append(proc)
        relays.append(relay)

    try:
        start(1)
        if jobs > 1 and _needs_speed_pin(plan):
            log("worker 1 runs alone until its first training run has chosen the study's "
                "speed settings")
            since, deadline = time.time() - 1, time.monotonic() + pin_timeout
            while (workers[0].poll() is None and time.monotonic() < deadline
                   and not _pin_from_new_runs(plan, since)):
                time.sleep(PIN_POLL_SECONDS)
        for k in range(2, jobs + 1):
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
        merge_study(plan)
        raise
    for relay in relays:
        relay.join(timeout=5)
    results = merge_study(plan)
    failed = [f"worker {k} with exit status {code}" for k, code in enumerate(codes, 1) if code]
    if failed:
        raise StudyError(f"{', '.join(failed)} ended early (its lines above say why); the "
                         f"finished cells are merged in {plan.results_path}, and the same "
                         "command runs the rest")
    return results


__all__ = ["available_cores", "run_study_jobs", "threads_per_job"]
