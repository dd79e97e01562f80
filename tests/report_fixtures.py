"""Study results JSONs for the report's tests, written as ``squeezelab study`` writes them
(workflows/studies/results.py: the schema, ``with_ours`` and ``group_records`` make the
published comparison and the groups), without training anything; and a reader of the HTML
page that walks its tags."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml

from squeezelab.workflows.studies.results import SCHEMA, SCHEMA_VERSION, group_records, with_ours

MACHINE = {"cpu": "Test CPU 3000", "cores": 2, "cpu_flags": ["avx2"], "torch": "2.13.0",
           "python": "3.12.0", "platform": "Linux", "threads": 1, "gpu": None}
SKIP_REASON = "the CIFAR-100 archive cifar-100-python.tar.gz is not at /nowhere/archive.tgz"
FAIL_REASON = "TrainingDiverged: the loss is nan at step 3"
#: published top-1 per variant: a within 5 points of ours (61 +- 1.41), b 40 points off
PUBLISHED = {"a": 61.5, "b": 70.0, "c": 50.0}
PARAMETERS = {"a": 1000, "b": 2000, "c": 4000}
TOP1 = {"a-s0": 0.60, "a-s1": 0.62, "b-s0": 0.30}
BITS = {"a": 8.0, "b": 4.5}

RECIPE = {
    "study": "toy",
    "title": "A toy study of three variants",
    "source": {"paper": "Someone et al. 2020", "arxiv": "2001.00001", "where": "Table 9",
               "url": "https://example.org/paper.pdf"},
    "base": {"epochs": 2},
    "axes": {"sr": [{"name": n, "model_args": {"squeeze_ratio": r}}
                    for n, r in (("a", 0.125), ("b", 0.25), ("c", 0.5))]},
    "seeds": [0, 1],
    "budgets": {"smoke": {"epochs": 1}, "cpu": {}, "full": {}},
    "published": {"metric": "top1", "dataset": "CIFAR-10", "source": "Someone et al. 2020",
                  "note": "the toy's note",
                  "values": [{"where": {"sr": n}, "percent": p} for n, p in PUBLISHED.items()]},
    "report": [
        {"plot": "table", "title": "Sizes and accuracy", "rows": ["variants.sr"],
         "y": ["parameters", "fp32_bytes", "metrics.test_top1", "metrics.bits_per_weight"],
         "aggregate": "seeds"},
        {"plot": "line", "title": "Top-1 against file size", "x": "file_bytes",
         "y": "metrics.test_top1", "aggregate": "seeds"},
        {"plot": "bar", "title": "Top-1 by variant", "x": "variants.sr",
         "y": "metrics.test_top1", "aggregate": "seeds"},
        {"plot": "curves", "title": "Test top-1 per epoch", "y": "test_top1",
         "series": ["variants.sr"]},
        {"plot": "scatter", "title": "Bits per weight against size", "x": "fp32_bytes",
         "y": "metrics.bits_per_weight"},
        {"plot": "table", "title": "Top-1 by seed", "rows": ["variants.sr"],
         "columns": ["seed"], "y": "metrics.test_top1"},
    ],
}


def cell_record(index: int, variant: str, seed: int, status: str, out: Path,
                recipe: Path) -> dict[str, Any]:
    name = f"{variant}-s{seed}"
    published = [{"where": {"sr": variant}, "percent": PUBLISHED[variant], "metric": "top1",
                  "dataset": "CIFAR-10", "source": "Someone et al. 2020",
                  "note": "the toy's note", "model_size_mb": None}]
    record: dict[str, Any] = {
        "index": index, "name": name, "kind": "train", "status": status,
        "variants": {"sr": variant}, "seed": seed, "budget": "smoke",
        "config": {"epochs": 1, "seed": seed, "out_dir": str(out / "runs"), "run_name": name},
    }
    if status == "pending":
        return {**record, "published": with_ours(published, None)}
    record.update(machine=MACHINE, git_commit="0123456789abcdef0123", git_dirty=False,
                  finished_at="2026-01-01T00:00:00+0000", recipe=str(recipe))
    if status != "done":
        reason = SKIP_REASON if status == "skipped" else FAIL_REASON
        return {**record, "reason": reason, "published": with_ours(published, None),
                **({"seconds": 3.5} if status == "failed" else {})}
    top1 = TOP1[name]
    metrics = {"test_top1": top1, "test_top5": min(1.0, top1 + 0.3), "test_loss": 1.5,
               "best_test_top1": top1, "train_loss": 1.2, "train_top1": top1 + 0.05,
               "epochs": 2, "bits_per_weight": BITS[variant]}
    parameters = PARAMETERS[variant]
    return {**record, "metrics": metrics, "parameters": parameters, "macs": 50 * parameters,
            "fp32_bytes": 4 * parameters, "file_bytes": 4 * parameters + 512,
            "seconds": 10.0 + index, "run_dir": str(out / "runs" / name),
            "curves": [{"epoch": 1, "train_loss": 2.0, "test_top1": top1 - 0.1},
                       {"epoch": 2, "train_loss": 1.2, "test_top1": top1}],
            "published": with_ours(published, metrics)}


def write_toy_study(root: Path, **changes: Any) -> Path:
    """A recipe and the results JSON of its six cells (a-s0 and a-s1 done; b-s0 done, b-s1
    failed; c-s0 skipped, c-s1 pending) under ``root``; returns the study's --out folder.
    ``changes`` replace top-level keys of the results."""
    root.mkdir(parents=True, exist_ok=True)
    recipe = root / "toy.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    out = root / "toy-out"
    plan = [("a", 0, "done"), ("b", 0, "done"), ("c", 0, "skipped"),
            ("a", 1, "done"), ("b", 1, "failed"), ("c", 1, "pending")]
    cells = [cell_record(i, v, s, status, out, recipe)
             for i, (v, s, status) in enumerate(plan, 1)]
    counts = {s: sum(c["status"] == s for c in cells)
              for s in ("done", "skipped", "failed", "pending")}
    results = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "study": "toy",
        "title": RECIPE["title"], "kind": "train", "source": RECIPE["source"],
        "recipe": str(recipe), "recipe_sha256": None, "budget": "smoke",
        "budget_settings": {"epochs": 1}, "seeds": [0, 1], "overrides": {},
        "published": RECIPE["published"], "report": RECIPE["report"], "out_dir": str(out),
        "merged_at": "2026-01-01T00:00:00+0000", "git_commit": "0123456789abcdef0123",
        "git_dirty": False, "counts": {"total": len(cells), **counts}, "cells": cells,
        "groups": group_records(cells), "unplanned_cells": [],
    }
    results.update(changes)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return out


class PageReader(HTMLParser):
    """Every tag with its attributes, the tables as rows of cell texts, the <style> text and
    the visible text of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[list[list[str]]] = []
        self.cell_classes: list[str] = []
        self.style = ""
        self._in_style = False
        self._cell: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "style":
            self._in_style = True
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
            self.cell_classes.append(dict(attrs).get("class") or "")

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._in_style:
            self.style += data
        if self._cell is not None:
            self._cell.append(data)


def read_page(html: str) -> PageReader:
    reader = PageReader()
    reader.feed(html)
    reader.close()
    return reader


def markdown_tables(text: str) -> list[list[list[str]]]:
    """The pipe tables of a Markdown text as rows of cell texts, formatting (`code`,
    **bold**) and escapes removed, the separator row left out."""
    tables: list[list[list[str]]] = []
    previous = False
    for line in text.splitlines():
        if not line.startswith("|"):
            previous = False
            continue
        cells = [c.strip() for c in
                 line.strip().strip("|").replace("\\|", "\0").split("|")]
        cells = [c.replace("\0", "|").replace("`", "").replace("**", "").replace("\\\\", "\\")
                 for c in cells]
        if all(set(c) <= {"-"} and c for c in cells):
            continue
        if not previous:
            tables.append([])
        tables[-1].append(cells)
        previous = True
    return tables
