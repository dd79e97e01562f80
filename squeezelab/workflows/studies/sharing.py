"""What lets several processes share one study folder: cell claims and speed pins.

A process claims a cell before it runs it (``claim_cell``: a lock file beside the cell's record,
created exclusively), so two processes on one folder -- two shells, ``--jobs`` workers, cluster
jobs on a shared disk -- never run the same cell; a claim left by a process that died on this
host is taken over, one from another host is named with how to clear it. The first cell that
autotunes its precision and memory layout pins them for the study on this machine kind
(``remember_speed`` into ``<out>/speed.json``, read by ``pinned_speed``; ``--jobs`` pins it
before its workers start, ``keep_speed``), so a busy machine cannot give one cell of a sweep
other numerics than the rest.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeezelab.workflows.studies.errors import StudyError
from squeezelab.workflows.studies.results import machine, now, write_json

if TYPE_CHECKING:
    from squeezelab.workflows.studies.recipe import Cell
    from squeezelab.workflows.studies.runner import StudyPlan

#: the precision and memory layout every cell of a study uses where it leaves them to the
#: autotune, per machine kind (``pinned_speed``)
SPEED_FILE = "speed.json"
#: how long an unreadable claim may be its creator's, still being written, before it is stale
CLAIM_WRITE_SECONDS = 60.0


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def live_holder(path: Path, host: str) -> str | None:
    """Who holds the claim ``path`` if that may still be a live process (a process on this
    host that is alive, one on another host, or a claim being written this instant), else
    None (no claim, or its process is gone)."""
    try:
        holder = json.loads(path.read_text())
        pid, their_host = int(holder["pid"]), str(holder["host"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # being written this instant by the process that created it, or damaged: a claim
        # unreadable for a minute is stale
        if _age_seconds(path) < CLAIM_WRITE_SECONDS:
            return f"a process claiming it this instant ({path})"
        return None
    if their_host == host:
        if _process_alive(pid):
            return f"process {pid} on this host since {holder.get('since')}"
        return None
    return (f"process {pid} on host {their_host} since {holder.get('since')}; if that run is "
            f"gone, delete {path}")


def claim_cell(plan: StudyPlan, cell: Cell) -> tuple[Path | None, str]:
    """Claim ``cell`` for this process: create its lock file exclusively. Returns (the lock,
    "") when claimed, or (None, who holds it) when another live process does. A claim whose
    process died on this host (a killed run) is taken over; one from another host cannot be
    checked, so it is left alone."""
    path = plan.claim_file(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": now()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = live_holder(path, me["host"])
            if holder is not None:
                return None, holder
            path.unlink(missing_ok=True)  # its process is gone: take the cell over
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return path, ""
    return None, f"{path} could not be claimed (another process took it meanwhile)"


def _speed_key() -> str:
    """Pins are per machine kind: what is fastest on one CPU may not be on another."""
    m = machine()
    return f"{m['cpu']} ({', '.join(m['cpu_flags']) or 'no AVX2'})"


def pinned_speed(plan: StudyPlan) -> dict[str, Any] | None:
    """The precision and memory layout this study's first autotuned cell chose on this kind
    of machine (``<out>/speed.json``), or None before any cell has chosen."""
    path = plan.out_dir / SPEED_FILE
    try:
        pins = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StudyError(f"{path} is not readable JSON ({e}): delete it, and the next cell "
                         "chooses the study's speed settings again") from None
    return pins.get(_speed_key()) if isinstance(pins, dict) else None


def remember_speed(plan: StudyPlan, run_dir: Path) -> None:
    """After a cell whose run autotuned (its environment.json's ``speed_autotune`` timed more
    than one candidate), keep its choice as the study's for this machine kind, unless one is
    kept already: the later cells then train under the same numerics (``pin_speed``)."""
    try:
        tuned = json.loads((run_dir / "environment.json").read_text()).get("speed_autotune")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(tuned, dict):
        keep_speed(plan, tuned, chosen_by=run_dir.name)


def keep_speed(plan: StudyPlan, tuned: dict[str, Any], chosen_by: str, **note: Any) -> bool:
    """Keep the autotune's choice ``tuned`` (``{"precision", "channels_last", "timings"}``)
    as the study's for this machine kind, naming the cell it was timed for and anything in
    ``note``; True if kept. Nothing is kept where nothing was timed (the settings were given)
    or a choice is kept already; a damaged pin file is left for ``pinned_speed`` to name."""
    if not tuned.get("timings"):
        return False
    path = plan.out_dir / SPEED_FILE
    pins: Any = {}
    if path.is_file():
        try:
            pins = json.loads(path.read_text())
        except ValueError:
            return False
    key = _speed_key()
    if not isinstance(pins, dict) or key in pins:
        return False
    pins[key] = {"precision": tuned["precision"], "channels_last": tuned["channels_last"],
                 "chosen_by": chosen_by, **note, "timings": tuned["timings"]}
    write_json(path, pins)
    return True


__all__ = ["CLAIM_WRITE_SECONDS", "SPEED_FILE", "claim_cell", "keep_speed", "live_holder",
           "pinned_speed", "remember_speed"]
