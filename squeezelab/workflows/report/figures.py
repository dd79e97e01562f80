"""The report's plots, drawn with matplotlib's Agg backend into PNG bytes: ``y`` against ``x``
as lines or points (accuracy against model size), bars with the spread over seeds as error
bars, per-epoch curves, and a DSD cell's weight histograms per phase; the published values
beside ours where the spec asks for them. Every figure comes with the numbers it draws (a
table) and names the cells it leaves out."""
from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from squeezelab.workflows.report.page import Figure, Table, Value
from squeezelab.workflows.report.values import (
    MISSING,
    Stat,
    Unit,
    axis_label,
    exact_value,
    format_value,
    is_fraction_field,
    is_number,
    label,
    plot_scale,
)
from squeezelab.workflows.studies.report_spec import ReportSpec

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_STYLES = ("-", "--", "-.", ":")
#: published values: grey hollow markers, one shape per metric (top-1, top-5, ...)
_PUBLISHED_MARKERS = ("D", "s", "^", "v", "o")


def _published_style(name: str, names: list[str]) -> dict[str, Any]:
    if name not in names:
        names.append(name)
    marker = _PUBLISHED_MARKERS[names.index(name) % len(_PUBLISHED_MARKERS)]
    return {"color": "0.35", "marker": marker, "markerfacecolor": "none", "markersize": 7}


def _metric_label(metric: Any) -> str:
    text = str(metric)
    return f"top-{text[3:]}" if text.startswith("top") and text[3:].isdigit() else text


def _colors(n: int) -> list[Any]:
    """``n`` distinguishable colours: the default cycle's ten, tab20's twenty, then a
    continuous colormap (the optimizer grid has 52 cells)."""
    from matplotlib import colormaps

    if n <= 10:
        return [f"C{i}" for i in range(n)]
    cmap = colormaps["tab20" if n <= 20 else "viridis"]
    return [cmap(i / max(n - 1, 1)) if n > 20 else cmap(i) for i in range(n)]


def _new_axes(series: int):
    """A figure wide enough for its legend (beside the axes when there are many series)."""
    fig = MplFigure(figsize=(7.6 if series <= 8 else 9.6, 4.4))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: MplFigure) -> bytes:
    buf = BytesIO()
    # no "Software" text chunk: the same numbers give the same bytes on any matplotlib
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _legend(ax, count: int) -> None:
    if count == 0:
        return
    if count <= 8:
        ax.legend(fontsize=8)
    else:  # beside the axes, in columns, small
        ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  ncol=1 + count // 26, frameon=False)


def _series(spec: ReportSpec, units: list[Unit]) -> dict[str, list[Unit]]:
    """The units of each series (one series, ``ours``, when the spec names none), in order."""
    out: dict[str, list[Unit]] = {}
    for u in units:
        key = " / ".join(format_value(p, u.value(p)) for p in spec.series) or "ours"
        out.setdefault(key, []).append(u)
    return out


def _point_labels(units: list[Unit], used: Sequence[str]) -> dict[str, str]:
    """Each unit's point name: its variants on the axes the plot does not show otherwise, or
    its name where those do not tell the units apart (one cell per seed)."""
    labels = {}
    for u in units:
        variants = u.records[0].get("variants") or {}
        names = [str(v) for a, v in variants.items() if f"variants.{a}" not in used and v]
        labels[u.name] = "-".join(names) or u.name
    if len(set(labels.values())) < len(labels):
        return {u.name: u.name for u in units}
    return labels


def _why_left_out(u: Unit, missing: str) -> str:
    return f"{u.name} ({u.status_text()})" if not u.done else f"{u.name} (no {missing})"


def _published(u: Unit, y: str) -> list[dict[str, Any]]:
    """The unit's published values drawn beside ``y``: every published accuracy, when ``y``
    is an accuracy (a paper's top-5 beside our top-1 is still the curve to compare)."""
    if not is_fraction_field(y):
        return []
    return [p for p in (u.records[0].get("published") or [])
            if isinstance(p, dict) and is_number(p.get("percent"))]


def _published_name(p: dict[str, Any]) -> str:
    return f"published {_metric_label(p.get('metric'))}" + (f" ({p['dataset']})"
                                                           if p.get("dataset") else "")


def _data_table(title: str, columns: list[str], rows: list[list[Value]]) -> Table:
    return Table(f"Data: {title}", columns, rows)


def _notes(spec: ReportSpec, left_out: list[str]) -> list[str]:
    notes = [spec.note] if spec.note else []
    if left_out:
        notes.append("Not drawn: " + "; ".join(left_out) + ".")
    return notes


def xy_plot(spec: ReportSpec, units: list[Unit], filename: str) -> Figure:
    """``y`` against ``x``: a line (sorted by x) or points per series; error bars where a
    point is the mean of several seeds; the published values as grey diamonds at our x."""
    x, y = str(spec.x), spec.y[0]
    sx, sy = plot_scale(x), plot_scale(y)
    series = _series(spec, units)
    fig, ax = _new_axes(len(series))
    names = _point_labels(units, [x, y, *spec.series])
    rows: list[list[Value]] = []
    left_out: list[str] = []
    drawn = 0
    for (key, members), color, marker in zip(series.items(), _colors(len(series)),
                                             _MARKERS * len(series)):
        points = []
        for u in members:
            xv, yv = u.value(x), u.value(y)
            if not isinstance(xv, Stat) or not isinstance(yv, Stat):
                left_out.append(_why_left_out(u, label(x if not isinstance(xv, Stat) else y)))
                continue
            points.append((xv.mean * sx, yv.mean * sy, yv.stdev * sy, u, xv, yv))
        if spec.plot == "line":
            points.sort(key=lambda p: p[0])
        if not points:
            continue
        drawn += 1
        errors = [p[2] for p in points]
        ax.errorbar([p[0] for p in points], [p[1] for p in points],
                    yerr=errors if any(errors) else None, color=color, marker=marker,
                    linestyle="-" if spec.plot == "line" else "none", capsize=3,
                    label=key if spec.series else f"ours ({label(y)})")
        for px, py, _, u, xv, yv in points:
            ax.annotate(names[u.name], (px, py), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
            rows.append([*([Value(key)] if spec.series else []), Value(names[u.name]),
                         Value(format_value(x, xv), exact=exact_value(xv)),
                         Value(format_value(y, yv), exact=exact_value(yv)),
                         Value("", refs=tuple(u.indices))])
    if spec.published:
        by_name: dict[str, list[tuple[float, float, Unit, dict[str, Any]]]] = {}
        for u in units:
            xv = u.value(x)
            for p in _published(u, y):
                if isinstance(xv, Stat):
                    by_name.setdefault(_published_name(p), []).append((xv.mean * sx,
                                                                       float(p["percent"]), u, p))
        published_names: list[str] = []
        for name, points in by_name.items():
            points.sort(key=lambda p: p[0])
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name,
                    linestyle=":" if spec.plot == "line" else "none",
                    **_published_style(name, published_names))
            drawn += 1
            for _, _, u, p in points:
                rows.append([*([Value(name)] if spec.series else []),
                             Value(f"{names[u.name]} ({name})"),
                             Value(format_value(x, u.value(x)), exact=exact_value(u.value(x))),
                             Value(f"{float(p['percent']):g}%"),
                             Value("", refs=tuple(u.indices))])
    ax.set(xlabel=axis_label(x), ylabel=axis_label(y), title=spec.title or None)
    ax.grid(alpha=0.3)
    _legend(ax, drawn)
    columns = [*(["series"] if spec.series else []), "point", label(x), label(y), "from cells"]
    notes = _notes(spec, left_out)
    if spec.published and any(_published(u, y) for u in units):
        notes.append("Published values are drawn at our cells' x, for the shape of the curve.")
    return _figure(spec, fig, filename, drawn, notes,
                   _data_table(spec.title or label(y), columns, rows))


def bar_plot(spec: ReportSpec, units: list[Unit], filename: str) -> Figure:
    """Bars of ``y`` per value of ``x`` (grouped by series): the mean over the seeds with the
    sample standard deviation as error bars and each seed's value as a dot; a cell that is not
    done leaves its slot empty, labelled with its status."""
    x, y = str(spec.x), spec.y[0]
    sy = plot_scale(y)
    categories = list(dict.fromkeys(format_value(x, u.value(x)) for u in units))
    series = _series(spec, units)
    fig, ax = _new_axes(len(series))
    width = 0.8 / max(len(series), 1)
    rows: list[list[Value]] = []
    left_out: list[str] = []
    drawn = 0
    published_names: list[str] = []
    for j, ((key, members), color) in enumerate(zip(series.items(), _colors(len(series)))):
        labelled = False
        for u in members:
            pos = categories.index(format_value(x, u.value(x))) - 0.4 + width * (j + 0.5)
            yv = u.value(y)
            if not isinstance(yv, Stat):
                left_out.append(_why_left_out(u, label(y)))
                ax.text(pos, 0, (u.records[0]["status"] if not u.done else "no value"),
                        rotation=90, ha="center", va="bottom", fontsize=8, color="0.3")
                continue
            ax.bar(pos, yv.mean * sy, width * 0.9, color=color,
                   yerr=yv.stdev * sy if yv.n > 1 else None, capsize=4,
                   label=(key if spec.series else "ours") if not labelled else None)
            labelled = True
            if yv.n > 1:
                ax.plot([pos] * yv.n, [v * sy for v in yv.values], linestyle="none",
                        marker=".", color="black", markersize=5)
            rows.append([*([Value(key)] if spec.series else []),
                         Value(format_value(x, u.value(x))),
                         Value(str(yv.n)), Value(format_value(y, yv), exact=exact_value(yv)),
                         Value("", refs=tuple(u.indices))])
            for p in _published(u, y) if spec.published else []:
                name = _published_name(p)
                ax.plot([pos], [float(p["percent"])], linestyle="none",
                        label=name if name not in published_names else None,
                        **_published_style(name, published_names))
                rows.append([*([Value(key)] if spec.series else []),
                             Value(f"{format_value(x, u.value(x))} ({name})"), Value(MISSING),
                             Value(f"{float(p['percent']):g}%"),
                             Value("", refs=tuple(u.indices))])
        drawn += labelled
    drawn += len(published_names)
    ax.set_xticks(range(len(categories)), categories)
    ax.set(xlabel=axis_label(x), ylabel=axis_label(y), title=spec.title or None)
    ax.grid(alpha=0.3, axis="y")
    _legend(ax, drawn)
    columns = [*(["series"] if spec.series else []), label(x), "cells done", label(y),
               "from cells"]
    notes = _notes(spec, left_out)
    if any(isinstance(u.value(y), Stat) and u.value(y).n > 1 for u in units):
        notes.append("Bars: the mean over seeds; error bars: the sample standard deviation; "
                     "dots: each seed.")
    return _figure(spec, fig, filename, drawn, notes,
                   _data_table(spec.title or label(y), columns, rows))


def curves_plot(spec: ReportSpec, units: list[Unit], filename: str) -> Figure:
    """A per-epoch field (``y``) against ``x`` (the epoch), one line per unit (the mean over
    its seeds, their range shaded); a published accuracy as a dotted level in the line's
    colour."""
    x, y = str(spec.x or "epoch"), spec.y[0]
    sy = plot_scale(y)
    names = [" / ".join(format_value(p, u.value(p)) for p in spec.series) or u.name
             for u in units]
    if len(set(names)) < len(names):
        names = [f"{n} ({u.name})" if spec.series else n for n, u in zip(names, units)]
    fig, ax = _new_axes(len(units))
    rows: list[list[Value]] = []
    left_out: list[str] = []
    drawn = 0
    best = min if "loss" in y else max
    metric = y[len("test_"):] if y.startswith("test_") else None
    for name, u, color, style in zip(names, units, _colors(len(units)),
                                     _STYLES * len(units)):
        at: dict[float, list[float]] = {}
        for r in u.done:
            for point in r.get("curves") or []:
                if is_number(point.get(x)) and is_number(point.get(y)):
                    at.setdefault(point[x], []).append(point[y] * sy)
        if not at:
            left_out.append(_why_left_out(u, f"{label(y)} per {label(x)}"))
            continue
        xs = sorted(at)
        means = [sum(at[k]) / len(at[k]) for k in xs]
        (line,) = ax.plot(xs, means, color=color, linestyle=style,
                          marker="o" if len(xs) <= 30 else None, markersize=3, label=name)
        drawn += 1
        if len(u.done) > 1:
            ax.fill_between(xs, [min(at[k]) for k in xs], [max(at[k]) for k in xs],
                            color=color, alpha=0.15, linewidth=0)
        published = [p for p in (u.records[0].get("published") or [])
                     if spec.published and metric and p.get("metric") == metric
                     and is_number(p.get("percent"))]
        for p in published:
            ax.axhline(float(p["percent"]), color=line.get_color(), linestyle=":", linewidth=1)
        rows.append([Value(name), Value(str(len(xs))),
                     Value(f"{means[-1]:.2f}" + ("%" if sy == 100 else "")),
                     Value(f"{best(means):.2f}" + ("%" if sy == 100 else "")),
                     Value(_published_text(published)), Value("", refs=tuple(u.indices))])
    levels = [float(p["percent"]) for u in units for p in (u.records[0].get("published") or [])
              if spec.published and metric and p.get("metric") == metric
              and is_number(p.get("percent"))]
    if levels and drawn:  # a level at the frame's edge would hide in it
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, min(levels) - 3), max(high, max(levels) + 3))
    ax.set(xlabel=axis_label(x), ylabel=axis_label(y), title=spec.title or None)
    ax.grid(alpha=0.3)
    _legend(ax, drawn)
    columns = ["curve", f"{label(x)}s", f"last {label(y)}", f"{best.__name__} {label(y)}",
               "published", "from cells"]
    notes = _notes(spec, left_out)
    if any(len(u.done) > 1 for u in units):
        notes.append("Lines: the mean over seeds; shading: their range.")
    if any(row[4].text != MISSING for row in rows):
        notes.append("Dotted levels: the published final value, in the line's colour.")
    return _figure(spec, fig, filename, drawn, notes,
                   _data_table(spec.title or label(y), columns, rows))


def histograms_plot(spec: ReportSpec, units: list[Unit], filename: str) -> Figure:
    """The weight histograms a DSD cell records at the end of each phase (``histograms`` in
    its record: the layer, and per phase the counts over [-limit, limit]), one panel per
    phase, one line per unit (its first done cell), as densities so that layers of different
    sizes compare; the table gives each panel's share of exact zeros."""
    names = [" / ".join(format_value(p, u.value(p)) for p in spec.series) or u.name
             for u in units]
    drawn_units: list[tuple[str, dict[str, Any], Unit]] = []
    left_out: list[str] = []
    for name, u in zip(names, units):
        record = u.done[0] if u.done else None
        phases = ((record or {}).get("histograms") or {}).get("phases") or []
        if not any(h.get("counts") for h in phases):
            left_out.append(_why_left_out(u, "weight histograms with their counts"))
            continue
        drawn_units.append((name, record, u))
    panels: list[str] = []
    for _, record, _ in drawn_units:
        for h in record["histograms"]["phases"]:
            if h["phase"] not in panels:
                panels.append(h["phase"])
    fig = MplFigure(figsize=(3.4 * max(len(panels), 1) + 1.0, 3.6))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, max(len(panels), 1), i + 1) for i in range(max(len(panels), 1))]
    rows: list[list[Value]] = []
    for (name, record, u), color in zip(drawn_units, _colors(len(drawn_units))):
        by_phase = {h["phase"]: h for h in record["histograms"]["phases"]}
        cells: list[Value] = [Value(name), Value(str(record["histograms"].get("layer")))]
        for ax, phase in zip(axes, panels):
            h = by_phase.get(phase)
            if not h or not h.get("counts"):
                cells.append(Value(MISSING))
                continue
            counts, limit = h["counts"], float(h["limit"])
            width = 2 * limit / len(counts)
            total = max(sum(counts), 1)
            xs = [-limit + width * (i + 0.5) for i in range(len(counts))]
            ax.plot(xs, [c / total / width for c in counts], color=color, label=name,
                    drawstyle="steps-mid", linewidth=1.2)
            zeros = h.get("zeros", 0) / max(h.get("numel") or total, 1)
            cells.append(Value(f"{100 * zeros:.1f}% (epoch {h.get('epoch')})"))
        cells.append(Value("", refs=tuple(u.indices)))
        rows.append(cells)
    for ax, phase in zip(axes, panels):
        ax.set(title=f"end of {phase}", xlabel="weight")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if axes:
        axes[0].set_ylabel("density (log)")
        if drawn_units:
            axes[-1].legend(fontsize=8, frameon=False)
    if spec.title:
        fig.suptitle(spec.title, y=1.04)  # above the panels' own titles
    columns = ["cell", "layer", *(f"zeros at the end of {p}" for p in panels), "from cells"]
    notes = _notes(spec, left_out)
    notes.append("Each line is a density over the layer's weights (log scale), the zeros of "
                 "a pruned phase included: the spike at 0 is what pruning leaves.")
    return _figure(spec, fig, filename, len(drawn_units), notes,
                   _data_table(spec.title or "weight histograms", columns, rows))


def _published_text(entries: list[dict[str, Any]]) -> str:
    return "; ".join(f"{float(p['percent']):g}%" for p in entries) or MISSING


def _figure(spec: ReportSpec, fig: MplFigure, filename: str, drawn: int, notes: list[str],
            data: Table) -> Figure:
    title = spec.title or f"{label(spec.y[0])} against {label(str(spec.x))}"
    alt = f"{spec.plot} plot: {title}"
    if not drawn:  # nothing finished yet: say so instead of an empty frame
        return Figure(title, None, filename, alt,
                      ["Nothing to draw yet: no cell has these values.", *notes], data)
    return Figure(title, _png(fig), filename, alt, notes, data)


def draw(spec: ReportSpec, units: list[Unit], filename: str) -> Figure:
    """The figure ``spec`` asks for (line, scatter, bar or curves) over ``units``."""
    if spec.plot in ("line", "scatter"):
        return xy_plot(spec, units, filename)
    if spec.plot == "bar":
        return bar_plot(spec, units, filename)
    if spec.plot == "curves":
        return curves_plot(spec, units, filename)
    if spec.plot == "histograms":
        return histograms_plot(spec, units, filename)
    raise ValueError(f"plot must be one of line, scatter, bar, curves, histograms, got "
                     f"{spec.plot!r}")


__all__ = ["bar_plot", "curves_plot", "draw", "histograms_plot", "xy_plot"]
