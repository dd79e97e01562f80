"""Small file helpers every writer shares: atomic writes and JSON encoding of our values.

A file is written to a temporary file beside its destination, flushed to disk and renamed into
place, so an interrupted run never leaves a half-written checkpoint, cache entry or .sqz.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file here: 0o666 less the process's umask."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def make_temp_beside(path: Path, suffix: str) -> tuple[int, str]:
    """A temporary file in ``path``'s folder (to be renamed onto it), with the permissions an
    ordinary new file gets: ``mkstemp`` makes it owner-only, which the rename would carry over
    to checkpoints, .sqz files and reports that others on a shared machine should read."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.fchmod(fd, _new_file_mode())
    return fd, tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp_beside(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for paths, sets/tuples and numpy/torch scalars."""
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
