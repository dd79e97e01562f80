"""``squeezelab train --nproc N``: re-run the same command under torchrun (``python -m
torch.distributed.run --standalone --nproc_per_node N -m squeezelab ...``), so that
``squeezelab train --nproc 2 ...`` and ``torchrun --nproc_per_node 2 -m squeezelab train ...``
are the same run. The loop (train/loop.py) joins the process group torchrun describes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (so the ranks do not launch again)."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            if i + 1 >= len(argv):
                raise ValueError("--nproc expects a process count, got nothing")
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        out.append(arg)
    return out


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The torchrun command line for ``squeezelab <argv>`` on ``nproc`` local processes."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive integer, got {nproc!r}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(nproc), "-m", "squeezelab", *strip_nproc(argv)]


def launch_torchrun(nproc: int, argv: Sequence[str] | None = None) -> int:
    """Run ``squeezelab <argv>`` (default: this process's arguments) under torchrun with
    ``nproc`` processes; returns torchrun's exit status."""
    if "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--nproc was given inside a torchrun process: use either torchrun "
                         "or --nproc, not both")
    cmd = torchrun_command(nproc, sys.argv[1:] if argv is None else argv)
    # OMP threads: torchrun sets 1 per rank when unset; keep a user's explicit choice.
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:  # torchrun forwards the signal to the ranks and exits
        return 130
