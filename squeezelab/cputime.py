"""CPU time: what a run costs, measured so that other work on the machine does not inflate it.

Wall seconds on a shared machine count the time a run waited for a core; CPU seconds count only
the time it ran (every thread of this process, and the child processes it has waited for, such
as a JPEG decode pool). With one thread per run the two agree on a quiet machine, and the CPU
seconds stay the run's own when two or three runs share the cores -- which is how a study's cost
in core-hours is measured on a busy machine (the report's "What the studies cost"). With
several threads on a busy machine, OpenMP's spin-waiting at barriers adds CPU time that does no
work, so the figure is then an upper bound too.
"""
from __future__ import annotations

import os


def cpu_seconds() -> float:
    """User plus system CPU seconds of this process (all threads) and its reaped children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


__all__ = ["cpu_seconds"]
