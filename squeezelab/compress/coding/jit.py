"""Compiling the coders' inner loops with numba (a dependency), where it imports.

A kernel is plain Python over numpy arrays; ``compiled(kernel)`` is its numba build, cached on
disk after the first compile, or None without numba, where the caller runs a numpy
equivalent (never the kernel as Python: a loop over a million symbols would take seconds).
``rans.py`` keeps its own switch, as its kernels do run as Python: a file must decode
everywhere.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

_LOCK = threading.Lock()  # decoding threads may ask for a kernel at once: compile it once


def compiled(kernel: Callable[..., Any]) -> Callable[..., Any] | None:
    """``kernel`` compiled by numba (``nogil``: decoding threads run it side by side), or
    None where numba is not installed."""
    with _LOCK:
        return _compile(kernel)


@functools.cache
def _compile(kernel: Callable[..., Any]) -> Callable[..., Any] | None:
    try:
        import numba
    except ImportError:
        return None
    return numba.njit(cache=True, nogil=True)(kernel)


__all__ = ["compiled"]
