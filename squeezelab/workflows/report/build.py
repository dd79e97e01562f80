"""Building the page model (page.py) from study results: for each study its source, the
published figures beside ours with the difference in points (marked where it exceeds the
threshold), the tables and plots its recipe's ``report:`` specs ask for, and every cell with
its status and provenance (the command that reproduces it, its run folder, machine and git
commit)."""
from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from squeezelab import __version__
from squeezelab.config import parse_value
from squeezelab.workflows.report import figures
from squeezelab.workflows.report.cost import cost_table
from squeezelab.workflows.report.inputs import load_cell_records, load_inputs
from squeezelab.workflows.report.page import Figure, Report, StudySection, Table, Value
from squeezelab.workflows.report.values import (
    MISSING,
    Stat,
    Unit,
    cell_units,
    exact_value,
    format_value,
    group_units,
    is_number,
    label,
)
from squeezelab.workflows.studies.recipe import load_study
from squeezelab.workflows.studies.report_spec import ReportSpec
from squeezelab.workflows.studies.results import (
    PROJECT_ROOT,
    cell_seconds,
    file_sha256,
    settings_sha256,
)

#: ours and the published figure differ by more than this many percentage points: marked
DEFAULT_THRESHOLD_POINTS = 5.0
#: the short statuses a table writes in place of a value a cell has not measured
NOT_DONE = ("skipped", "failed", "pending")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "study"


def metric_label(metric: str | None) -> str:
    """``top1`` -> ``top-1``."""
    return re.sub(r"^top(\d+)$", r"top-\1", str(metric))


def published_metric(path: str) -> str | None:
    """The published metric our field ``path`` is compared with (results.with_ours: our
    ``test_<metric>``), or None."""
    m = re.fullmatch(r"metrics\.test_(\w+)", path)
    return m.group(1) if m else None


def units_for(spec: ReportSpec, cells: list[dict[str, Any]]) -> list[Unit]:
    if spec.where:  # only the cells of the variants it names (one, or a list per axis)
        wanted = {axis: {str(v) for v in (variants if isinstance(variants, list)
                                          else [variants])}
                  for axis, variants in spec.where.items()}
        cells = [c for c in cells
                 if all(str((c.get("variants") or {}).get(axis)) in names
                        for axis, names in wanted.items())]
    return group_units(cells) if spec.aggregate == "seeds" else cell_units(cells)


def axes_of(cells: list[dict[str, Any]]) -> list[str]:
    """The study's axes, in order, from its cells' variants."""
    axes: dict[str, None] = {}
    for c in cells:
        for axis in (c.get("variants") or {}):
            axes.setdefault(axis, None)
    return list(axes)


def default_specs(cells: list[dict[str, Any]], seeds: list[Any]) -> list[ReportSpec]:
    """What a study whose recipe asks for nothing gets: its headline accuracies per cell (per
    combination of variants, over the seeds, where there are several seeds)."""
    rows = [f"variants.{a}" for a in axes_of(cells)] or ["name"]
    y = [p for p in ("metrics.test_top1", "metrics.test_top5")
         if any(c.get("metrics", {}).get(p.split(".")[1]) is not None for c in cells)]
    return [ReportSpec(title="Results", rows=rows, y=y or ["seconds"],
                       aggregate="seeds" if len(seeds) > 1 else "cells")]


# --- provenance ------------------------------------------------------------------------------

def recipe_file(recipe: str) -> Path | None:
    """The recipe file a results JSON names, found from here: as recorded (relative to the
    folder the study ran in), else relative to the squeezelab checkout (recipes/studies/
    recorded from the checkout's root); None when neither exists."""
    for path in (Path(recipe), PROJECT_ROOT / recipe):
        if path.is_file():
            return path
    return None


def _recipe_seeds(recipe: str, budget: str) -> list[int] | None:
    """The seeds the recipe file (still) gives ``budget``, or None when it cannot be read."""
    path = recipe_file(recipe)
    if path is None:
        return None
    try:
        study = load_study(path)
        _, seeds = study.budget_values(budget)
    except (OSError, ValueError):
        return None
    return seeds or study.seeds


def _set_value(value: Any) -> str:
    """``value`` as ``--set`` reads it back (as runner.cell_commands writes it)."""
    if isinstance(value, str) and value and parse_value(value) == value and "," not in value:
        return value
    return json.dumps(value)


def study_command(results: dict[str, Any], cell: int | None = None) -> str:
    """The ``squeezelab study`` command that reproduces the study's cells (``cell``: only
    that one) into the same folder: budget, seeds (where the recipe's differ from the ones
    run), ``--set`` overrides."""
    parts = ["squeezelab", "study", str(results.get("recipe")), "--budget",
             str(results.get("budget"))]
    if results.get("out_dir"):
        parts += ["--out", str(results["out_dir"])]
    seeds = results.get("seeds") or []
    if seeds and _recipe_seeds(str(results.get("recipe")), str(results.get("budget"))) != seeds:
        parts += ["--seeds", *map(str, seeds)]
    for key, value in (results.get("overrides") or {}).items():
        parts += ["--set", f"{key}={_set_value(value)}"]
    if cell is not None:
        parts += ["--cell", str(cell)]
    return shlex.join(parts)


def machine_text(machine: dict[str, Any] | None, *, full: bool = True) -> str:
    """``<cpu>, <cores> cores[, <SIMD flags>][, GPU <gpu>][, torch <version>]`` (``full``:
    the flags and torch too)."""
    if not machine:
        return MISSING
    parts = [str(machine.get("cpu") or "unknown CPU")]
    if machine.get("cores"):
        parts.append(f"{machine['cores']} cores")
    if full and machine.get("cpu_flags"):
        parts.append("/".join(machine["cpu_flags"]))
    if machine.get("gpu"):
        parts.append(f"GPU {machine['gpu']}")
    if full and machine.get("torch"):
        parts.append(f"torch {machine['torch']}")
    return ", ".join(parts)


def commit_text(commit: str | None, dirty: bool | None) -> str:
    if not commit:
        return MISSING if dirty is None else "not a git checkout"
    return commit[:12] + (" with uncommitted changes" if dirty else "")


def run_dir_of(results: dict[str, Any], record: dict[str, Any]) -> str:
    """The cell's run folder: recorded by the kind, else where the runner puts it (a skipped
    cell never had one)."""
    if record.get("run_dir"):
        return str(record["run_dir"])
    if record.get("status") == "skipped" or not results.get("out_dir"):
        return MISSING
    return str(Path(results["out_dir"]) / "runs" / record["name"])


def cells_table(sid: str, results: dict[str, Any]) -> Table:
    """Every cell of the plan, whatever its status, with the reason and its provenance."""
    cells = results["cells"]
    reasons = any(c.get("reason") for c in cells)
    columns = ["#", "cell", "status", *(["reason"] if reasons else []), "seconds", "machine",
               "git commit", "run directory", "command"]
    rows = []
    for c in cells:
        status = None if c["status"] == "done" else c["status"]
        seconds = cell_seconds(c)
        row = [Value(str(c.get("index", MISSING)), anchor=f"{sid}-cell-{c.get('index')}"),
               Value(c["name"], code=True), Value(c["status"], status=status)]
        if reasons:
            row.append(Value(c.get("reason") or MISSING, status=status))
        row += [Value(format_value("seconds", seconds), exact=exact_value(seconds)),
                Value(machine_text(c.get("machine"), full=False),
                      exact=machine_text(c.get("machine"))),
                Value(commit_text(c.get("git_commit"), c.get("git_dirty")), code=True),
                Value(run_dir_of(results, c), code=True),
                Value(study_command(results, c.get("index")), code=True)]
        rows.append(row)
    return Table("Cells and provenance", columns, rows,
                 ["Every number above names the cells (#) it comes from; each cell's row says "
                  "how to reproduce it, where its run folder is, and the machine and git "
                  "commit that produced it (the machine's SIMD flags and torch: above)."])


# --- published figures beside ours -----------------------------------------------------------

def _ours(unit: Unit, i: int, published: dict[str, Any]) -> list[float]:
    """Our value (percent) beside the unit's ``i``-th published value, from each done cell."""
    out = []
    for r in unit.done:
        entries = r.get("published") or []
        entry = entries[i] if i < len(entries) else None
        if entry is None or (entry.get("metric"), entry.get("percent")) != \
                (published.get("metric"), published.get("percent")):
            entry = next((e for e in entries if (e.get("metric"), e.get("percent"))
                          == (published.get("metric"), published.get("percent"))), None)
        if entry is not None and is_number(entry.get("ours_percent")):
            out.append(float(entry["ours_percent"]))
    return out


def _our_size(unit: Unit) -> Value:
    """The size to set beside a published one: the bytes of the file the cells wrote (a
    compressed model), else the fp32 size of their model (marked so)."""
    written = unit.value("compression.file_bytes")
    if written is not None:
        return Value(format_value("compression.file_bytes", written))
    fp32 = unit.value("fp32_bytes")
    return Value(MISSING if fp32 is None else f"{format_value('fp32_bytes', fp32)} (fp32)")


def comparison_table(results: dict[str, Any], threshold: float) -> tuple[Table | None, int, int]:
    """The published figures beside ours, one row per published value of each combination of
    variants (mean ± stdev over its seeds), the difference in points, and whether it exceeds
    ``threshold``; with how many were compared and how many differ."""
    units = group_units(results["cells"])
    pairs = [(u, i, p) for u in units for i, p in enumerate(u.records[0].get("published") or [])
             if isinstance(p, dict) and is_number(p.get("percent"))]
    if not pairs:
        return None, 0, 0
    block = results.get("published") or {}
    several = any(len(u.records) > 1 for u, _, _ in pairs)
    sizes = any(p.get("model_size_mb") is not None for _, _, p in pairs)
    notes = any(p.get("note") and p.get("note") != block.get("note") for _, _, p in pairs)
    sources = {p.get("source") for _, _, p in pairs}
    columns = ["cells" if several else "cell", "metric", "dataset", "published", "ours",
               *(["seeds"] if several else []), "difference", "check",
               *(["published size", "our size"] if sizes else []),
               *(["source"] if len(sources) > 1 else []), *(["note"] if notes else []),
               "from cells"]
    rows, compared, differ = [], 0, 0
    for unit, i, p in pairs:
        ours = _ours(unit, i, p)
        status = None if unit.done else unit.records[0]["status"]
        if ours:
            stat = Stat(tuple(ours))
            mean = stat.mean
            ours_text = f"{stat.mean:.2f}%" if stat.n == 1 else \
                f"{stat.mean:.2f} ± {stat.stdev:.2f}%"
            if not unit.all_done:
                ours_text += f" ({unit.status_text()})"
            difference = mean - float(p["percent"])
            flag = abs(difference) > threshold
            compared += 1
            differ += flag
            diff_value = Value(f"{difference:+.2f} pts", exact=repr(difference), flag=flag)
            check = Value(f"DIFFERS by more than {threshold:g} pts" if flag
                          else f"within {threshold:g} pts", flag=flag)
            ours_value = Value(ours_text, exact=exact_value(stat))
        else:
            reason = unit.status_text() if not unit.all_done else \
                f"not measured (no {p.get('metric')} in the cells' records)"
            ours_value = Value(reason, status=status or "missing")
            diff_value = Value(MISSING)
            check = Value("no result to compare", status=status or "missing")
        row = [Value(unit.name, code=True), Value(metric_label(p.get("metric"))),
               Value(str(p.get("dataset") or MISSING)), Value(f"{float(p['percent']):g}%"),
               ours_value]
        if several:
            row.append(Value(", ".join(str(r.get("seed")) for r in unit.done) or "none done"))
        row += [diff_value, check]
        if sizes:
            size = p.get("model_size_mb")
            row += [Value(MISSING if size is None else f"{float(size):g} MB"), _our_size(unit)]
        if len(sources) > 1:
            row.append(Value(str(p.get("source") or MISSING)))
        if notes:
            row.append(Value(str(p.get("note")) if p.get("note") and
                             p.get("note") != block.get("note") else MISSING))
        row.append(Value("", refs=tuple(unit.indices)))
        rows.append(row)
    table_notes = [f"Ours: the mean over the cells' seeds (± the sample standard deviation "
                   f"where there are several); difference: ours minus published, in percentage "
                   f"points; marked DIFFERS where it exceeds {threshold:g} points."]
    if sizes:
        table_notes.append("Our size: the bytes of the file a cell wrote, else its model's "
                           "fp32 size.")
    if len(sources) == 1 and next(iter(sources)):
        table_notes.append(f"Published: {next(iter(sources))}.")
    if block.get("note"):
        table_notes.append(f"Note: {block['note']}.")
    return Table("Published figures and ours", columns, rows, table_notes), compared, differ


# --- the recipe's report specs ---------------------------------------------------------------

def _key_text(unit: Unit, path: str) -> str:
    return format_value(path, unit.value(path))


def _published_of(unit: Unit, metric: str) -> list[dict[str, Any]]:
    return [p for p in (unit.records[0].get("published") or [])
            if isinstance(p, dict) and p.get("metric") == metric and is_number(p.get("percent"))]


def _published_text(entries: list[dict[str, Any]]) -> str:
    return "; ".join(f"{float(p['percent']):g}%" + (f" ({p['dataset']})" if p.get("dataset")
                                                    else "") for p in entries)


def _measured(unit: Unit, path: str) -> Value:
    """The unit's value at ``path``, or its status where no cell of it has one."""
    value = unit.value(path)
    if value is None and not unit.done:
        status = unit.records[0]["status"] if len(unit.records) == 1 else "not done"
        return Value(status, status=unit.records[0]["status"])
    return Value(format_value(path, value), exact=exact_value(value))


def spec_table(spec: ReportSpec, cells: list[dict[str, Any]]) -> Table:
    """The table ``spec`` asks for: a row per value of ``rows``, a column per ``y`` (the
    published value beside each accuracy that has one), or a pivot over ``columns``."""
    units = units_for(spec, cells)
    rows_paths = list(spec.rows) or [f"variants.{a}" for a in axes_of(cells)] or ["name"]
    if spec.columns:
        return _pivot_table(spec, units, rows_paths)
    keys = [tuple(_key_text(u, p) for p in rows_paths) for u in units]
    if len(set(keys)) < len(keys):  # rows that do not tell the units apart: name them
        rows_paths = ["name", *rows_paths]
    seeds = spec.aggregate == "seeds"
    any_not_done = any(not u.all_done for u in units)
    columns = [label(p) for p in rows_paths] + (["seeds"] if seeds else [])
    published_cols: dict[str, str] = {}
    for y in spec.y:
        columns.append(label(y))
        metric = published_metric(y)
        if spec.published and metric and any(_published_of(u, metric) for u in units):
            published_cols[y] = metric
            columns.append(f"published {metric_label(metric)}")
    columns += (["status"] if any_not_done else []) + ["from cells"]
    rows = []
    for u in units:
        row = [Value(_key_text(u, p)) for p in rows_paths]
        if seeds:
            row.append(Value(", ".join(str(r.get("seed")) for r in u.done) or "none done"))
        for y in spec.y:
            row.append(_measured(u, y))
            if y in published_cols:
                row.append(Value(_published_text(_published_of(u, published_cols[y]))
                                 or MISSING))
        if any_not_done:
            row.append(Value(u.status_text(), status=None if u.all_done
                             else u.records[0]["status"]))
        row.append(Value("", refs=tuple(u.indices)))
        rows.append(row)
    notes = [spec.note] if spec.note else []
    if seeds:
        notes.append("Mean ± sample standard deviation over the seeds that are done.")
    return Table(spec.title or "Results", columns, rows, notes)


def _pivot_table(spec: ReportSpec, units: list[Unit], rows_paths: list[str]) -> Table:
    y = spec.y[0]
    metric = published_metric(y) if spec.published else None
    row_keys: dict[tuple[str, ...], None] = {}
    col_keys: dict[tuple[str, ...], None] = {}
    where: dict[tuple[tuple[str, ...], tuple[str, ...]], Unit] = {}
    for u in units:
        rk = tuple(_key_text(u, p) for p in rows_paths)
        ck = tuple(_key_text(u, p) for p in spec.columns)
        row_keys.setdefault(rk, None)
        col_keys.setdefault(ck, None)
        if (rk, ck) in where:  # several units in one table cell: pooled (mean ± stdev)
            where[rk, ck] = Unit(where[rk, ck].name, where[rk, ck].records + u.records)
        else:
            where[rk, ck] = u
    columns = [label(p) for p in rows_paths] + [" / ".join(ck) for ck in col_keys]
    rows = []
    for rk in row_keys:
        row = [Value(k) for k in rk]
        for ck in col_keys:
            u = where.get((rk, ck))
            if u is None:  # no cell of the plan has this combination
                row.append(Value("no such cell"))
                continue
            value = _measured(u, y)
            text = value.text
            if not value.status and not u.all_done:
                text += f" ({len(u.done)} of {len(u.records)} cells done)"
            if metric and _published_of(u, metric):
                text += f" (published {_published_text(_published_of(u, metric))})"
            row.append(Value(text, refs=tuple(u.indices), status=value.status,
                             exact=value.exact))
        rows.append(row)
    notes = [f"{label(y)} by {', '.join(label(p) for p in rows_paths)} (rows) and "
             f"{', '.join(label(p) for p in spec.columns)} (columns); #k: the cells it comes "
             "from."]
    if spec.note:
        notes.insert(0, spec.note)
    if any(not u.all_done for u in units):
        notes.append("Cells that are not done are named as such here; their reasons are in "
                     "the cells table below.")
    return Table(spec.title or label(y), columns, rows, notes)


# --- the page --------------------------------------------------------------------------------

def _source_line(results: dict[str, Any]) -> str:
    src = results.get("source") or {}
    parts = [src.get("paper")]
    if src.get("arxiv"):
        parts.append(f"arXiv {src['arxiv']}")
    parts.append(src.get("where"))
    if src.get("url"):  # as text, not a link: the page refers to nothing outside itself
        parts.append(re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", str(src["url"])))
    line = ", ".join(str(p) for p in parts if p)
    if src.get("note"):
        line += f". {src['note']}"
    return line or "no source given in the recipe"


def _recipe_fact(results: dict[str, Any]) -> str:
    recipe = str(results.get("recipe"))
    recorded = results.get("recipe_sha256")
    text = recipe + (f" (sha256 {recorded[:12]})" if recorded else "")
    path = recipe_file(recipe)
    if path is None:
        return text + "; not found from this folder"
    # the parsed values where the results recorded their hash: a comment edited is no change,
    # and (where the budget's own hash was recorded) neither is another budget's change
    budget_settings = results.get("budget_settings_sha256")
    if budget_settings:
        if settings_sha256(path, str(results.get("budget"))) != budget_settings:
            return text + f"; {path} has changed for the {results.get('budget')} budget " \
                "since this run"
        return text
    settings = results.get("recipe_settings_sha256")
    if settings and settings_sha256(path) != settings:
        return text + f"; {path} has changed since this run"
    if not settings and recorded and file_sha256(path) != recorded:
        return text + f"; {path} has changed since this run"
    return text


def study_section(sid: str, path: Path, results: dict[str, Any],
                  threshold: float) -> StudySection:
    """One study's section: source, facts, banners, the comparison, the recipe's tables and
    plots, and the cells."""
    cells = results["cells"]
    counts = {s: sum(c["status"] == s for c in cells) for s in ("done", *NOT_DONE)}
    budget = str(results.get("budget"))
    settings = results.get("budget_settings") or {}
    seeds = list(results.get("seeds") or [])
    facts: list[tuple[str, Value]] = [
        ("results", Value(str(path), code=True)),
        ("recipe", Value(_recipe_fact(results), code=True)),
        ("budget", Value(budget + (": " + ", ".join(f"{k}={v}" for k, v in settings.items())
                                   if settings else ""))),
        ("seeds", Value(", ".join(map(str, seeds)) or MISSING)),
    ]
    if results.get("overrides"):
        facts.append(("--set", Value(", ".join(f"{k}={_set_value(v)}" for k, v in
                                               results["overrides"].items()), code=True)))
    facts += [
        ("cells", Value(f"{len(cells)}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))),
        ("reproduce", Value(study_command(results), code=True)),
        ("one cell", Value(study_command(results) + " --cell K   (K: the cell's # below)",
                           code=True)),
    ]
    machines = list(dict.fromkeys(machine_text(c.get("machine")) for c in cells
                                  if c.get("machine")))
    commits = list(dict.fromkeys(commit_text(c.get("git_commit"), c.get("git_dirty"))
                                 for c in cells if c["status"] != "pending"))
    facts += [("machine", Value("; ".join(machines) or MISSING)),
              ("git commit", Value("; ".join(commits) or
                                   commit_text(results.get("git_commit"),
                                               results.get("git_dirty")), code=True)),
              ("merged", Value(f"{results.get('merged_at') or MISSING} in "
                               f"{results.get('out_dir') or MISSING}"))]
    if results.get("unplanned_cells"):
        facts.append(("not in the plan", Value(
            ", ".join(results["unplanned_cells"]) + " (cell files another plan wrote: not "
            "reported)")))

    comparison, compared, differ = comparison_table(results, threshold)
    banners = []
    if budget == "smoke":
        banners.append("Smoke budget: a check that every cell runs (a few hundred images, one "
                       "epoch), not a measurement; its differences from the published figures "
                       "say nothing about the method.")
    if differ:
        banners.append(f"{differ} of {compared} published figures differ from ours by more "
                       f"than {threshold:g} percentage points (marked DIFFERS below).")
    not_done = {s: n for s, n in counts.items() if s != "done" and n}
    if not_done:
        banners.append(f"{sum(not_done.values())} of {len(cells)} cells are not done ("
                       + ", ".join(f"{n} {s}" for s, n in not_done.items())
                       + "): each is shown as such, with its reason in the cells table.")
    if any(c.get("git_dirty") for c in cells):
        banners.append("Some cells ran from a checkout with uncommitted changes: their git "
                       "commit alone does not reproduce them.")

    specs = list(results["report"]) or default_specs(cells, seeds)
    blocks: list[Table | Figure] = []
    for k, spec in enumerate(specs, 1):
        if spec.plot == "table":
            blocks.append(spec_table(spec, cells))
        else:
            units = units_for(spec, cells)
            blocks.append(figures.draw(spec, units, f"{sid}-{k}.png"))
    return StudySection(sid, str(results.get("title") or results["study"]), _source_line(results),
                        str(path), facts, banners, comparison, blocks, cells_table(sid, results))


def build_report(inputs: Sequence[str | Path], *,
                 threshold: float = DEFAULT_THRESHOLD_POINTS,
                 costs_from: Sequence[str | Path] = ()) -> Report:
    """The page model of the studies whose results ``inputs`` name (results JSON files or
    study output folders); a published figure and ours more than ``threshold`` percentage
    points apart are marked. ``costs_from``: folders of another run's cell records, whose CPU
    time the cost table takes for the same cells where the results recorded wall time only."""
    if not (isinstance(threshold, (int, float)) and threshold >= 0):
        raise ValueError(f"threshold must be a non-negative number of percentage points, got "
                         f"{threshold!r}")
    sections, used, loaded = [], set(), []
    reruns = load_cell_records(costs_from) if costs_from else []
    for path, results in load_inputs(inputs):
        base = sid = slug(f"{results['study']}-{results.get('budget')}")
        n = 2
        while sid in used:
            sid, n = f"{base}-{n}", n + 1
        used.add(sid)
        loaded.append(results)
        sections.append(study_section(sid, path, results, threshold))
    generated = f"{time.strftime('%Y-%m-%d %H:%M:%S %z')} by squeezelab {__version__}"
    return Report("squeezelab study report", generated, float(threshold), sections,
                  cost_table(loaded, reruns) if loaded else None)


__all__ = ["DEFAULT_THRESHOLD_POINTS", "build_report", "comparison_table", "spec_table",
           "study_command", "study_section"]
