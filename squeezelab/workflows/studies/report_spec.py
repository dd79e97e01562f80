"""What a study's report draws: one ``ReportSpec`` per table or plot of the ``report:`` block,
checked against the fields a cell record has (``results.py``) before any cell runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from squeezelab.config import ConfigBase
from squeezelab.workflows.studies.errors import check

PLOTS = ("table", "line", "scatter", "bar", "curves", "histograms")
AGGREGATES = ("cells", "seeds")
#: the first part of a report field path must be one of a cell record's keys (results.py)
RECORD_FIELDS = ("index", "name", "kind", "status", "variants", "seed", "budget", "config",
                 "metrics", "parameters", "macs", "fp32_bytes", "file_bytes", "seconds",
                 "cpu_seconds", "train_seconds", "train_cpu_seconds", "seconds_per_epoch",
                 "images_per_s", "published",
                 # the kinds that start from another model (results.py lists their fields)
                 "sources", "source", "compression",
                 # a DSD cell's weight histogram at the end of each phase (kinds/dsd.py)
                 "histograms")
#: what a per-epoch record of a cell's curves holds (train/loop.py's metrics.jsonl)
CURVE_FIELDS = ("epoch", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5",
                "lr", "seconds", "images_per_s")


@dataclass
class ReportSpec(ConfigBase):
    """One table or plot of the study's report. Field paths name a cell record's values
    (``metrics.test_top1``, ``fp32_bytes``, ``variants.model``,
    ``config.model_args.squeeze_ratio``); a ``curves`` plot names per-epoch fields (``epoch``,
    ``test_top1``) for x and y instead.

    A table has a row per value of ``rows`` and, for each of ``y``, a column, or, when
    ``columns`` is given, a column per value of ``columns`` (a pivot: one ``y`` then). A plot
    draws ``y`` against ``x``, one series per value of ``series``. ``aggregate: seeds`` uses
    the mean and spread over seeds (the results' ``groups``), ``cells`` every cell;
    ``published`` draws the published values beside ours. A ``histograms`` plot draws the
    weight histograms a DSD cell records at the end of each phase, one panel per phase and
    one line per cell (vanilla against residual conv1, say). ``where: {AXIS: VARIANT}`` (or
    a list of variants) keeps only the cells of those variants (any plot or table)."""

    plot: str = "table"
    title: str = ""
    x: str | None = None
    y: list[str] = field(default_factory=lambda: ["metrics.test_top1"])
    rows: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    aggregate: str = "cells"
    published: bool = True
    note: str = ""
    where: dict[str, Any] = field(default_factory=dict)  # {axis: variant}: only these cells

    def __post_init__(self) -> None:
        for key in ("y", "rows", "columns", "series"):
            value = getattr(self, key)
            if isinstance(value, str):
                setattr(self, key, [value])
            check(isinstance(getattr(self, key), list), f"{key} must be a field path or a "
                  f"list of them, got {value!r}")
        check(self.plot in PLOTS, f"plot must be one of {PLOTS}, got {self.plot!r}")
        check(self.aggregate in AGGREGATES,
              f"aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")
        check(bool(self.y), "y must name at least one field")
        if self.plot == "table":
            check(self.x is None and not self.series, "a table has rows and columns, not x "
                  "or series")
            check(not self.columns or len(self.y) == 1, "a pivot table (columns given) shows "
                  "one y")
        else:
            check(not self.rows and not self.columns, f"a {self.plot} plot has x, y and "
                  "series, not rows or columns")
            check(len(self.y) == 1, f"a {self.plot} plot draws one y, got {self.y}")
        check(isinstance(self.where, dict) and all(isinstance(k, str) for k in self.where),
              f"where must map axes to a variant or a list of them ({{run: sp0.4}}), got "
              f"{self.where!r}")
        if self.plot == "histograms":
            # one panel per phase end, one line per cell (or per value of series)
            self.y = ["histograms"] if self.y == ["metrics.test_top1"] else self.y
            check(self.y == ["histograms"] and self.x is None,
                  "a histograms plot draws the cells' recorded weight histograms (y: "
                  "histograms), one panel per phase, without x")
            paths = [*self.series]
        elif self.plot == "curves":
            self.x = self.x or "epoch"
            for key, value in (("x", self.x), ("y", self.y[0])):
                check(value in CURVE_FIELDS, f"{key} of a curves plot must be one of "
                      f"{CURVE_FIELDS}, got {value!r}")
            paths = [*self.series]
        else:
            check(self.plot == "table" or self.x is not None,
                  f"a {self.plot} plot needs x (a field path)")
            paths = [p for p in (self.x, *self.y) if p is not None]
            paths += [*self.rows, *self.columns, *self.series]
        for path in paths:
            head = str(path).split(".")[0]
            check(head in RECORD_FIELDS, f"field {path!r} is not a cell record's: it must "
                  f"start with one of {', '.join(RECORD_FIELDS)}")


__all__ = ["AGGREGATES", "CURVE_FIELDS", "PLOTS", "RECORD_FIELDS", "ReportSpec"]
