"""The report's page model: what one page shows, independent of how it is written. The HTML
and the Markdown renderers walk the same model, so the two show the same tables with the
same text."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Value:
    """One table cell. ``text`` is what both renderers write; ``refs`` the 1-based indices of
    the cells it comes from (written after the text as ``#3``, linked to the cell's
    provenance row in HTML); ``flag`` marks a disagreement (bold, and the text says so);
    ``status`` a cell that is not done (skipped, failed, pending) for styling; ``exact`` the
    full-precision value (an HTML tooltip); ``anchor`` an id to link to; ``code`` monospace."""

    text: str
    refs: tuple[int, ...] = ()
    flag: bool = False
    status: str | None = None
    exact: str | None = None
    anchor: str | None = None
    code: bool = False

    def full_text(self) -> str:
        """The cell as plain text, references included: what both renderers show."""
        refs = " ".join(f"#{k}" for k in self.refs)
        return " ".join(part for part in (self.text, refs) if part)


@dataclass
class Table:
    """A titled table: column names, rows of Values, and notes under it."""

    title: str
    columns: list[str]
    rows: list[list[Value]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Figure:
    """A plot: its PNG (None when there is nothing to draw, and the notes say why), the file
    name it gets beside report.md, its alt text, notes, and the plotted numbers as a table."""

    title: str
    png: bytes | None
    filename: str
    alt: str
    notes: list[str] = field(default_factory=list)
    data: Table | None = None


@dataclass
class StudySection:
    """One study's part of the page."""

    id: str                               # HTML anchor and figure file prefix
    title: str
    source: str                           # paper, arXiv id, table/figure, as one line
    results_path: str
    facts: list[tuple[str, Value]]        # budget, counts, seeds, recipe, commands, machine
    banners: list[str]                    # what a reader must know first (smoke, differs)
    comparison: Table | None              # published figures beside ours
    blocks: list[Table | Figure]          # what the recipe's report: spec asks for
    cells: Table                          # every cell: status, reason, provenance


@dataclass
class Report:
    title: str
    generated: str                        # when and by which squeezelab
    threshold_points: float
    studies: list[StudySection]
    cost: Table | None = None             # what each study's cells took (cost.cost_table)


__all__ = ["Figure", "Report", "StudySection", "Table", "Value"]
