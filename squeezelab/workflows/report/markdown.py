"""The report as Markdown: the same sections and tables as the HTML page, with the plots as
PNG files beside report.md, linked relatively."""
from __future__ import annotations

from squeezelab.workflows.report.page import Figure, Report, StudySection, Table, Value


def _escape(text: str) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, lines joined."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _cell(value: Value) -> str:
    text = _escape(value.text)
    if value.code and text:
        text = f"`{text}`"
    if value.flag and text:
        text = f"**{text}**"
    refs = " ".join(f"#{k}" for k in value.refs)
    return " ".join(part for part in (text, refs) if part)


def render_table(table: Table, heading: str = "###") -> str:
    out = [f"{heading} {table.title}", ""] if table.title else []
    out.append("| " + " | ".join(_escape(c) for c in table.columns) + " |")
    out.append("|" + "|".join("---" for _ in table.columns) + "|")
    for row in table.rows:
        out.append("| " + " | ".join(_cell(v) for v in row) + " |")
    out.append("")
    for note in table.notes:
        out += [f"*{note}*" if "*" not in note else note, ""]
    return "\n".join(out)


def render_figure(figure: Figure) -> str:
    out = [f"### {figure.title}", ""]
    if figure.png is not None:
        out += [f"![{figure.alt}]({figure.filename})", ""]
    out += [line for n in figure.notes for line in (f"*{n}*" if "*" not in n else n, "")]
    if figure.data is not None and figure.data.rows:
        out.append(render_table(figure.data, heading="####"))
    return "\n".join(out)


def render_section(s: StudySection) -> str:
    out = [f'<a id="{s.id}"></a>', "", f"## {s.title}", "", f"Source: {s.source}", ""]
    for text in s.banners:
        out += [f"> **Note:** {text}", ""]
    for name, value in s.facts:
        text = f"`{value.text}`" if value.code else value.text
        out.append(f"- **{name}:** {text}")
    out.append("")
    if s.comparison is not None:
        out.append(render_table(s.comparison))
    else:
        out += ["*The recipe gives no published figures for this study.*", ""]
    for block in s.blocks:
        out.append(render_figure(block) if isinstance(block, Figure) else render_table(block))
    out.append(render_table(s.cells))
    return "\n".join(out)


def render_markdown(report: Report) -> str:
    """The whole report as one Markdown string; image links name ``Figure.filename``, which
    the writer puts beside the Markdown file."""
    out = [f"# {report.title}", "",
           f"Generated {report.generated}. Differences from a published figure of more than "
           f"{report.threshold_points:g} percentage points are marked DIFFERS. Every number "
           "names the cells (#) it comes from; the cells table of each study gives their "
           "provenance.", ""]
    out += [f"- [{s.title}](#{s.id})" for s in report.studies]
    out.append("")
    if report.cost is not None:
        out.append(render_table(report.cost, heading="##"))
    out += [render_section(s) for s in report.studies]
    return "\n".join(out).rstrip() + "\n"


__all__ = ["render_markdown"]
