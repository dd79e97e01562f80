"""The report's inputs: study results JSONs (``squeezelab study`` writes them, schema in
``workflows/studies/results.py``), given as files or as the study output folders that hold
them, read and checked before anything is drawn."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from squeezelab.config import ConfigError
from squeezelab.workflows.studies.report_spec import ReportSpec
from squeezelab.workflows.studies.results import SCHEMA, SCHEMA_VERSION, STATUSES

RESULTS_NAME = "results.json"


class ReportError(ConfigError):
    """An input the report cannot use: not a study results JSON, a folder without one."""


def find_results(path: str | Path) -> list[Path]:
    """The results JSON files ``path`` names: the file itself; for a folder its
    ``results.json``, else every ``results.json`` below it (a folder of studies), in order."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"results path {p} does not exist (give a results JSON that "
                                "squeezelab study wrote, or the study's --out folder)")
    if not p.is_dir():
        return [p]
    if (p / RESULTS_NAME).is_file():
        return [p / RESULTS_NAME]
    found = sorted(f for f in p.rglob(RESULTS_NAME) if f.is_file())
    if found:
        return found
    if (p / "cells").is_dir():
        raise ReportError(f"{p} holds cell results but no {RESULTS_NAME}: merge them first "
                          f"(squeezelab study RECIPE --budget BUDGET --out {p} --merge)")
    raise ReportError(f"{p} holds no {RESULTS_NAME} (give a results JSON that squeezelab study "
                      "wrote, or the study's --out folder)")


def _check(ok: bool, path: Path, message: str) -> None:
    if not ok:
        raise ReportError(f"{path} is not a usable study results JSON: {message}")


def read_results(path: str | Path) -> dict[str, Any]:
    """The results JSON at ``path``, checked: its schema and version, the study's name, and a
    name and a valid status on every cell. The recipe's report specs are validated as the
    recipe does (``ReportSpec``), so a hand-edited file fails here, naming the spec."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ReportError(f"{path} is not a study results JSON: it is not readable JSON "
                          f"({e})") from None
    _check(isinstance(data, dict), path, f"expected a JSON object, got {type(data).__name__}")
    if "schema" not in data and data.get("status") in STATUSES and "name" in data:
        raise ReportError(f"{path} is one cell's record, not a study's results: give the "
                          "study's results.json, or its --out folder")
    _check(data.get("schema") == SCHEMA, path,
           f"its schema is {data.get('schema')!r}, expected {SCHEMA!r} (the results.json "
           "that squeezelab study writes)")
    version = data.get("schema_version")
    _check(isinstance(version, int) and 1 <= version <= SCHEMA_VERSION, path,
           f"schema_version {version!r}; this squeezelab reads versions 1..{SCHEMA_VERSION}")
    _check(isinstance(data.get("study"), str) and bool(data["study"]), path,
           "it names no study")
    cells = data.get("cells")
    _check(isinstance(cells, list), path, "'cells' must be a list of cell records")
    for i, cell in enumerate(cells):
        _check(isinstance(cell, dict) and isinstance(cell.get("name"), str), path,
               f"cells[{i}] is not a cell record with a name")
        _check(cell.get("status") in STATUSES, path,
               f"cell {cell['name']!r} has status {cell.get('status')!r}, expected one of "
               f"{', '.join(STATUSES)}")
        _check(isinstance(cell.get("published", []), list), path,
               f"cell {cell['name']!r}: 'published' must be a list")
    specs = data.get("report") or []
    _check(isinstance(specs, list), path, "'report' must be a list of report specs")
    try:
        data["report"] = [ReportSpec.from_dict(spec, source=f"{path}: report[{i}]")
                          for i, spec in enumerate(specs)]
    except ConfigError as e:  # the recipe's error (StudyError), as the report's
        raise ReportError(str(e)) from None
    return data


def load_inputs(paths: Sequence[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(path, results) for every results JSON that ``paths`` name, in the order given (a file
    named twice is read once)."""
    if not paths:
        raise ReportError("no results given (give results JSON files or study output folders)")
    files: list[Path] = []
    for p in paths:
        for f in find_results(p):
            if f.resolve() not in {g.resolve() for g in files}:
                files.append(f)
    return [(f, read_results(f)) for f in files]


def load_cell_records(folders: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every finished cell record in ``cells/`` folders at or below ``folders`` (a study's
    --out folder, or a folder of several, as a working day's --keep copy is): the cost table's
    second source of CPU time (``cost.remeasured_cpu``). A record that is not a readable
    finished cell is refused, naming the file, rather than skipped: a cost is not guessed."""
    records: list[dict[str, Any]] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise ReportError(f"--costs-from {root}: not a folder (give a study's --out "
                              "folder, or a folder that holds several)")
        files = sorted(f for f in root.rglob("*.json") if f.parent.name == "cells")
        if not files:
            raise ReportError(f"--costs-from {root}: no cell records (cells/*.json) in it or "
                              "below it")
        for f in files:
            try:
                record = json.loads(f.read_bytes())
            except ValueError as e:
                raise ReportError(f"{f} is not a cell record: it is not readable JSON "
                                  f"({e})") from None
            if not (isinstance(record, dict) and isinstance(record.get("name"), str)
                    and record.get("status") in STATUSES):
                raise ReportError(f"{f} is not a cell record: expected a JSON object with a "
                                  f"name and a status ({', '.join(STATUSES)})")
            records.append(record)
    return records


__all__ = ["RESULTS_NAME", "ReportError", "find_results", "load_cell_records", "load_inputs",
           "read_results"]
