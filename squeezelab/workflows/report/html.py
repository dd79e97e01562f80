"""The report as one self-contained HTML page: CSS inline, plots as base64 PNG data URIs,
links only to anchors on the page itself, so it opens offline and refers to nothing outside
(no CDN, no web font: the reader's own sans-serif)."""
from __future__ import annotations

import base64
from html import escape

from squeezelab.workflows.report.page import Figure, Report, StudySection, Table, Value

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color: #1d232a; background: #fff; margin: 0 auto; max-width: 1180px;
       padding: 1.2rem 1.6rem 3rem; line-height: 1.45; font-size: 15px; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.35rem; border-bottom: 2px solid #d9dee3; padding-bottom: 0.2rem;
     margin-top: 2.6rem; }
h3 { font-size: 1.08rem; margin: 1.6rem 0 0.5rem; }
.meta, .source { color: #4a5561; margin-top: 0.2rem; }
nav ul { margin: 0.4rem 0; padding-left: 1.2rem; }
a { color: #1a5fb4; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 1rem;
           margin: 0.8rem 0; font-size: 0.9rem; }
dl.facts dt { font-weight: 600; color: #4a5561; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.banner { border-left: 4px solid #c0392b; background: #fbeeed; padding: 0.45rem 0.8rem;
          margin: 0.5rem 0; font-size: 0.92rem; }
.banner.info { border-left-color: #7f8c8d; background: #f2f4f5; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.3rem 0 0.4rem; font-size: 0.86rem; }
th, td { border: 1px solid #d5dadf; padding: 0.25rem 0.5rem; text-align: left;
         vertical-align: top; }
th { background: #eef1f4; font-weight: 600; }
tr:nth-child(even) td { background: #fafbfc; }
td.flag { background: #fbe3e1 !important; }
td.flag strong { color: #a4261b; }
td.status-skipped, td.status-failed, td.status-pending, td.status-missing {
  color: #6b4f00; background: #fff7df !important; font-style: italic; }
td.status-failed { color: #8e1b10; background: #fdecea !important; }
td code, dd code { font-size: 0.8rem; overflow-wrap: break-word; }
td:target { outline: 2px solid #1a5fb4; }
p.note { font-size: 0.84rem; color: #4a5561; margin: 0.2rem 0; }
figure { margin: 0.6rem 0 0.3rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e7eb; }
figcaption { font-size: 0.86rem; color: #4a5561; }
details { margin: 0.2rem 0 0.8rem; }
summary { cursor: pointer; font-size: 0.86rem; color: #1a5fb4; }
""".strip()


def _cell(value: Value, sid: str, header: bool = False) -> str:
    tag = "th" if header else "td"
    attrs = []
    classes = []
    if value.flag:
        classes.append("flag")
    if value.status:
        classes.append(f"status-{value.status}")
    if classes:
        attrs.append(f'class="{" ".join(classes)}"')
    if value.anchor:
        attrs.append(f'id="{escape(value.anchor)}"')
    if value.exact:
        attrs.append(f'title="{escape(value.exact)}"')
    body = escape(value.text)
    if value.code and body:
        body = f"<code>{body}</code>"
    if value.flag and body:
        body = f"<strong>{body}</strong>"
    refs = " ".join(f'<a href="#{escape(sid)}-cell-{k}">#{k}</a>' for k in value.refs)
    content = " ".join(part for part in (body, refs) if part)
    return f"<{tag}{' ' if attrs else ''}{' '.join(attrs)}>{content}</{tag}>"


def render_table(table: Table, sid: str, heading: str = "h3") -> str:
    out = [f"<{heading}>{escape(table.title)}</{heading}>"] if table.title else []
    out.append('<div class="table-wrap"><table>')
    out.append("<thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in table.columns)
               + "</tr></thead><tbody>")
    for row in table.rows:
        out.append("<tr>" + "".join(_cell(v, sid) for v in row) + "</tr>")
    out.append("</tbody></table></div>")
    out += [f'<p class="note">{escape(n)}</p>' for n in table.notes]
    return "\n".join(out)


def render_figure(figure: Figure, sid: str) -> str:
    out = [f"<h3>{escape(figure.title)}</h3>"]
    if figure.png is not None:
        data = base64.b64encode(figure.png).decode("ascii")
        out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{escape(figure.alt)}">'
                   "</figure>")
    out += [f'<p class="note">{escape(n)}</p>' for n in figure.notes]
    if figure.data is not None and figure.data.rows:
        out.append("<details><summary>The numbers drawn</summary>")
        out.append(render_table(figure.data, sid, heading="h4"))
        out.append("</details>")
    return "\n".join(out)


def render_section(s: StudySection) -> str:
    out = [f'<section id="{escape(s.id)}">', f"<h2>{escape(s.title)}</h2>",
           f'<p class="source">Source: {escape(s.source)}</p>']
    for text in s.banners:
        kind = "banner info" if text.startswith("Smoke budget") else "banner"
        out.append(f'<div class="{kind}" role="note"><strong>Note:</strong> {escape(text)}</div>')
    out.append('<dl class="facts">')
    for name, value in s.facts:
        body = escape(value.text)
        out.append(f"<dt>{escape(name)}</dt><dd>{f'<code>{body}</code>' if value.code else body}"
                   "</dd>")
    out.append("</dl>")
    if s.comparison is not None:
        out.append(render_table(s.comparison, s.id))
    else:
        out.append('<p class="note">The recipe gives no published figures for this study.</p>')
    for block in s.blocks:
        out.append(render_figure(block, s.id) if isinstance(block, Figure)
                   else render_table(block, s.id))
    out.append(render_table(s.cells, s.id))
    out.append("</section>")
    return "\n".join(out)


def render_html(report: Report) -> str:
    """The whole page as one string."""
    toc = "".join(f'<li><a href="#{escape(s.id)}">{escape(s.title)}</a></li>'
                  for s in report.studies)
    body = "\n".join(render_section(s) for s in report.studies)
    cost = render_table(report.cost, "cost", heading="h2") if report.cost is not None else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(report.title)}</title>
<style>
{CSS}
</style>
</head>
<body>
<header>
<h1>{escape(report.title)}</h1>
<p class="meta">Generated {escape(report.generated)}. Differences from a published figure of more
than {report.threshold_points:g} percentage points are marked DIFFERS. Every number names the
cells (#) it comes from; the cells table of each study gives their provenance.</p>
<nav><ul>{toc}</ul></nav>
{cost}
</header>
<main>
{body}
</main>
</body>
</html>
"""


__all__ = ["CSS", "render_html"]
