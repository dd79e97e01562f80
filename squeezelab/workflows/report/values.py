"""Reading and formatting the numbers of a study's cell records for the report: a value at a
field path (``metrics.test_top1``, ``file_bytes``, ``variants.sr``), the cells that make one
row (a cell, or the cells of one combination of variants over its seeds), their mean and
spread, and how each kind of number is written (accuracies as percent, bytes in kB/MB,
MACs in millions)."""
from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any

#: what the report writes where there is no value
MISSING = "—"
#: a field whose values are fractions 0..1 of correct answers: shown in percent
_FRACTION = re.compile(r"(^|_)(top\d+|acc|accuracy)$")
_BYTES = re.compile(r"(^|_)bytes$")
_SECONDS = re.compile(r"(^|_)seconds(_per_epoch)?$")
#: friendlier column names for the fields every train cell has (others: their path)
LABELS = {
    "metrics.test_top1": "test top-1", "metrics.test_top5": "test top-5",
    "metrics.best_test_top1": "best test top-1", "metrics.test_loss": "test loss",
    "metrics.train_loss": "train loss", "metrics.train_top1": "train top-1",
    "parameters": "parameters", "macs": "MACs", "fp32_bytes": "fp32 size",
    "file_bytes": "file size", "seconds": "seconds", "seconds_per_epoch": "seconds per epoch",
    "images_per_s": "images per s", "test_top1": "test top-1", "test_top5": "test top-5",
    "train_top1": "train top-1", "train_loss": "train loss", "test_loss": "test loss",
}


def label(path: str) -> str:
    """The column or axis name of a field path: ``metrics.test_top1`` -> ``test top-1``,
    ``variants.sr`` -> ``sr``, anything else its path."""
    if path in LABELS:
        return LABELS[path]
    if path.startswith("variants.") and path.count(".") == 1:
        return path.split(".", 1)[1]
    return path


def last_part(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def is_fraction_field(path: str) -> bool:
    """Whether ``path`` holds accuracies as fractions 0..1 (shown and drawn in percent)."""
    return bool(_FRACTION.search(last_part(path)))


def is_bytes_field(path: str) -> bool:
    return bool(_BYTES.search(last_part(path)))


def axis_label(path: str) -> str:
    """``label(path)`` with the unit the plot draws it in."""
    if is_fraction_field(path):
        return f"{label(path)} (%)"
    if is_bytes_field(path):
        return f"{label(path)} (MB)"
    if _SECONDS.search(last_part(path)):
        return f"{label(path)} (s)"
    return label(path)


def plot_scale(path: str) -> float:
    """What a plot multiplies ``path``'s values by: percent for accuracies, MB for bytes."""
    if is_fraction_field(path):
        return 100.0
    if is_bytes_field(path):
        return 1e-6
    return 1.0


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def field_value(record: Any, path: str) -> Any:
    """The value at dotted ``path`` in ``record`` (list items by their index), or None."""
    value = record
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


@dataclass(frozen=True)
class Stat:
    """Numbers from one or more cells: their mean, sample standard deviation (0 for one) and
    the values themselves."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def stdev(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0


def format_number(path: str, value: float) -> str:
    """One number of field ``path``, written in its unit."""
    name = last_part(path)
    if is_fraction_field(path):
        return f"{100 * value:.2f}%"
    if is_bytes_field(path):
        return format_bytes(value)
    if name == "macs":
        return f"{value / 1e6:,.1f}M"
    if _SECONDS.search(name):
        return f"{value:.1f} s"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.4g}"


def format_bytes(value: float) -> str:
    """Bytes in B, kB or MB (decimal: the papers' 4.8 MB is 4.8e6 bytes)."""
    if abs(value) < 1e4:
        return f"{value:,.0f} B"
    if abs(value) < 1e6:
        return f"{value / 1e3:.1f} kB"
    return f"{value / 1e6:.2f} MB"


def format_value(path: str, value: Any) -> str:
    """A value of field ``path`` as the report writes it: a Stat of several cells as
    ``mean ± stdev``, accuracies in percent, bytes in kB/MB, None as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, Stat):
        if value.n == 1 or (len(set(value.values)) == 1 and not is_fraction_field(path)):
            return format_number(path, value.values[0])  # equal across seeds: a size, say
        if is_fraction_field(path):
            return f"{100 * value.mean:.2f} ± {100 * value.stdev:.2f}%"
        return f"{format_number(path, value.mean)} ± {format_number(path, value.stdev)}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if is_number(value):
        return format_number(path, value)
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(path, v) for v in value) or MISSING
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def exact_value(value: Any) -> str | None:
    """The full-precision value behind a formatted one (HTML shows it on hover)."""
    if isinstance(value, Stat):
        if value.n == 1:
            return repr(value.values[0])
        return f"mean {value.mean!r}, stdev {value.stdev!r} over {list(value.values)!r}"
    if is_number(value):
        return repr(value)
    return None


@dataclass
class Unit:
    """What one row of a table (one point of a plot) stands for: one cell, or the cells of one
    combination of variants over its seeds. ``records`` holds every cell of it, whatever its
    status; values come from the done ones."""

    name: str
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") == "done"]

    @property
    def indices(self) -> list[int]:
        return [r["index"] for r in self.records if isinstance(r.get("index"), int)]

    @property
    def all_done(self) -> bool:
        return len(self.done) == len(self.records)

    def value(self, path: str) -> Any:
        """The value at ``path``: a Stat over the done cells for a number (over all cells
        when none is done: a failed cell's seconds), else the cells' common value (their
        distinct values joined by " / " where they differ), or None."""
        source = self.done or self.records
        values = [v for v in (field_value(r, path) for r in source) if v is not None]
        if not values:
            return None
        if all(is_number(v) for v in values):
            return Stat(tuple(values))
        distinct = list(dict.fromkeys(json.dumps(v, sort_keys=True, default=str)
                                      for v in values))
        if len(distinct) == 1:
            return values[0]
        return " / ".join(format_value(path, json.loads(v)) for v in distinct)

    def status_text(self) -> str:
        """``done``; or, where a cell is not done, each such cell's status and reason."""
        if self.all_done:
            return "done"
        parts = []
        for r in self.records:
            if r.get("status") == "done":
                continue
            text = r["status"]
            if r.get("reason"):
                text += f": {r['reason']}"
            parts.append(text if len(self.records) == 1 else f"{r['name']} {text}")
        if len(self.records) > 1:
            parts.insert(0, f"{len(self.done)} of {len(self.records)} cells done")
        return "; ".join(parts)


def cell_units(cells: list[dict[str, Any]]) -> list[Unit]:
    """One unit per cell, in plan order."""
    return [Unit(c["name"], [c]) for c in cells]


def group_units(cells: list[dict[str, Any]]) -> list[Unit]:
    """One unit per combination of variants (the cells that differ only in seed), in plan
    order, named as the results' groups are: the cell name without ``-s<seed>``."""
    groups: dict[str, Unit] = {}
    for c in cells:
        key = json.dumps([c.get("kind"), c.get("variants")], sort_keys=True)
        if key not in groups:
            name = re.sub(r"-?s\d+$", "", c["name"]) or c["name"]
            groups[key] = Unit(name)
        groups[key].records.append(c)
    return list(groups.values())


__all__ = ["LABELS", "MISSING", "Stat", "Unit", "axis_label", "cell_units", "exact_value",
           "field_value", "format_bytes", "format_number", "format_value", "group_units",
           "is_bytes_field", "is_fraction_field", "is_number", "label", "plot_scale"]
