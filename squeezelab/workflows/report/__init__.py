"""``squeezelab report``: study results (workflows/studies) as one self-contained HTML page and
its Markdown twin.

    inputs.py     find and check the results JSONs (files or study output folders)
    values.py     values at field paths of the cell records, means over seeds, formatting
    build.py      the page model: per study its source, published figures beside ours
                  (differences marked), the recipe's report: tables and plots, every cell with
                  its provenance
    cost.py       what the studies cost (core-time spent: CPU time where recorded, or a rerun's
                  of the same cells; and still to run)
    figures.py    the plots (matplotlib, Agg) as PNG bytes
    page.py       the page model both renderers walk
    html.py       one HTML file: CSS inline, plots as data URIs, nothing fetched from outside
    markdown.py   report.md, the plots as PNG files beside it

    files = write_report(["runs/studies/bypass/cpu"], "report/")
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from squeezelab.fileio import atomic_write_bytes
from squeezelab.workflows.report.build import (
    DEFAULT_THRESHOLD_POINTS,
    build_report,
    study_command,
)
from squeezelab.workflows.report.html import render_html
from squeezelab.workflows.report.inputs import ReportError, find_results, read_results
from squeezelab.workflows.report.markdown import render_markdown
from squeezelab.workflows.report.page import Figure, Report, StudySection, Table, Value

HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"


@dataclass
class ReportFiles:
    """What ``write_report`` wrote."""

    html: Path
    markdown: Path
    figures: list[Path] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)  # the studies' titles


def write_report(inputs: Sequence[str | Path], out_dir: str | Path, *,
                 threshold: float = DEFAULT_THRESHOLD_POINTS,
                 costs_from: Sequence[str | Path] = ()) -> ReportFiles:
    """Write ``out_dir/report.html`` (self-contained) and ``out_dir/report.md`` (its plots as
    PNG files beside it) for the studies whose results ``inputs`` name: results JSON files or
    study output folders. ``threshold``: the percentage points by which ours and a published
    figure may differ before the page marks it; ``costs_from``: folders of another run's cell
    records (a working day's --keep copy), whose CPU time the cost table counts for the same
    cells where the results recorded wall time only."""
    report = build_report(inputs, threshold=threshold, costs_from=costs_from)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for section in report.studies:
        for block in section.blocks:
            if isinstance(block, Figure) and block.png is not None:
                path = out / block.filename
                atomic_write_bytes(path, block.png)
                figures.append(path)
    html = out / HTML_NAME
    markdown = out / MARKDOWN_NAME
    atomic_write_bytes(html, render_html(report).encode("utf-8"))
    atomic_write_bytes(markdown, render_markdown(report).encode("utf-8"))
    return ReportFiles(html, markdown, figures, [s.title for s in report.studies])


__all__ = ["DEFAULT_THRESHOLD_POINTS", "Figure", "Report", "ReportError", "ReportFiles",
           "StudySection", "Table", "Value", "build_report", "find_results", "read_results",
           "render_html", "render_markdown", "study_command", "write_report"]
