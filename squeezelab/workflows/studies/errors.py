"""What a study refuses: ``StudyError`` and the checks the recipe's parts share (names that
become folder and file names)."""
from __future__ import annotations

import re
from typing import Any

from squeezelab.config import ConfigError

#: names of studies, axes and variants become folder and file names
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.+]+$")


class StudyError(ConfigError):
    """A study recipe, a cell selection or a study's output folder that cannot be used."""


def check(ok: bool, message: str) -> None:
    if not ok:
        raise StudyError(message)


def check_name(name: Any, what: str) -> None:
    check(isinstance(name, str) and bool(NAME_PATTERN.match(name)),
          f"{what} must be a name of letters, digits, '_', '.' or '+' (it names folders and "
          f"files), got {name!r}")


__all__ = ["NAME_PATTERN", "StudyError", "check", "check_name"]
