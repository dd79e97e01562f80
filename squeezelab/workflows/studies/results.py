"""A study's results: one JSON file per cell, and the merged results JSON rebuilt from them.

Output folder of a study (``--out``, default ``runs/studies/<study>/<budget>``)::

    <out>/cells/<cell>.json     the cell's record, written when the cell ends (atomically)
    <out>/cells/<cell>.lock     while a process runs the cell: its pid, host and start
    <out>/runs/<cell>/          the cell's own run folder (config.yaml, metrics.jsonl,
                                checkpoints/): an interrupted cell resumes from it
    <out>/results.json          the merged results (or ``--results PATH``), rebuilt from
                                cells/*.json after every run and by ``--merge``

Results JSON (``schema: squeezelab-study-results``, ``schema_version: 1``)::

    schema, schema_version
    study, title, kind         the recipe's name, title and default cell kind
    source                     {paper, arxiv, where, url, note}: what the study reproduces
    recipe, recipe_sha256      the recipe file and a hash of its bytes
    recipe_settings_sha256     a hash of its parsed values (comments and layout aside)
    budget_settings_sha256     the same of the values this budget reads (other budgets aside)
    budget                     smoke | cpu | full
    budget_settings            what the budget sets over the recipe's base
    seeds                      the seeds the study ran
    overrides                  ``--set`` values applied to every cell
    published                  the recipe's published block (defaults and values)
    report                     the recipe's report specs: [{plot, title, x, y, rows,
                               columns, series, aggregate, published, note}] (recipe.py)
    out_dir, merged_at         where the cells are, when this file was written
    git_commit, git_dirty      the checkout the merge ran in (each cell has its own)
    counts                     {total, done, skipped, failed, pending}
    cells                      one record per cell of the plan, in order (below)
    groups                     one per combination of variants, over its seeds (below)
    unplanned_cells            names of cell files in <out>/cells that the plan has not
                               (another --seeds, an edited recipe)

Cell record (the file <out>/cells/<cell>.json; in ``cells``)::

    index, name                1-based position in the plan, "<variant>-...-s<seed>"
    kind, status               the cell's kind; done | skipped | failed | pending
    reason                     why it was skipped (data missing) or failed (skipped/failed)
    variants                   {axis: variant name or null where the variant skips the axis}
    seed, budget               its seed, the budget it ran under
    config                     the kind's full settings (a TrainConfig dict for train), as
                               planned: "auto" values as asked, the chosen ones in
                               auto_settings
    published                  [{metric, percent, dataset, source, note, model_size_mb,
                               compression_ratio, where, ours_percent,
                               difference_points}]: the recipe's
                               published values for this cell, ours beside each (in percent)
    seconds                    wall seconds of the cell in the process that finished it
                               (a resumed cell's whole time: ``cell_seconds``)
    cpu_seconds                its CPU seconds in that process (all threads; cputime.py):
                               what the cell cost, however busy the machine was
    machine                    {cpu, cores, cpu_flags, torch, python, platform, threads, gpu}
    git_commit, git_dirty      the checkout that ran it
    finished_at                ISO time stamp
    recipe                     the recipe file
  and what the kind measured; a ``train`` cell:
    metrics                    {test_top1, test_top5, test_loss, best_test_top1, train_loss,
                               train_top1, epochs, test_protocol}: accuracies as fractions
    parameters, macs           parameter count; multiply-accumulates per image at image_size
    fp32_bytes                 4 bytes per parameter: the model size the papers plot
    file_bytes, file           bytes of the written weights file (checkpoints/best
                               .safetensors), and its path
    image_size, num_classes, train_images, test_images
    run_seconds, train_seconds, seconds_per_epoch, images_per_s, resumed
    train_cpu_seconds          the epochs' CPU seconds (training and scoring), summed over
                               every process that ran them (a resumed cell's too)
    auto_settings              {precision, channels_last} the run's autotune chose
    pgd_perturbations          noise injections of optimizer pgd (0 otherwise)
    run_dir, metrics_path      the run folder and its per-epoch metrics.jsonl
    curves                     [{epoch, train_loss, train_top1, test_loss, test_top1,
                               test_top5, lr, seconds, images_per_s}]: the per-epoch
                               curves, kept here so the results stand without the run folder
  a cell with a cell reference (``source: {cell: dense}``, recipe.py) also:
    sources                    {setting: {cell, index, path, top1, test_top1, test_protocol}}:
                               the referenced cell, the checkpoint read (its best) and that
                               cell's best-epoch top-1 as its record gives it
  the kinds that start from a model (kinds/; their module docstrings say more):
    source                     {path, top1, protocol}: the checkpoint started from, and its
                               top-1 scored by this cell (compress, quantize, sensitivity,
                               distill: the teacher) or as it records it (dsd)
    compress     metrics       {test_top1, test_top5 (the .sqz loaded back), source_top1,
                               source_top5, top1_change, sparsity, steps_top1: {prune_1 ..,
                               share, centroids}, test_protocol}
                 compression   {file_bytes, file_mb, source_file_bytes, ratio_source_file,
                               fp32_bytes, ratio_fp32, bits_per_parameter, sparsity,
                               header_bytes}; also parameters, fp32_bytes, file_bytes, file
                               (the .sqz), summary, compress_config, steps
    quantize     metrics       {test_top1, test_top5 (the file loaded back), source_top1,
                               source_top5, top1_change, bits_per_weight, fine_tune_epochs,
                               test_protocol}
                 compression   {bits_per_weight, weight_bits, num_weights, quantized_layers,
                               layers, ratio_fp32_weights, file_bytes, file_mb, json_bytes,
                               source_file_bytes, ratio_source_file, file_bits_per_parameter}
                               ; also quantizer {method, config_type, config}, layers (the
                               transform's report), file, fine_tune_dir
    dsd, distill               a train cell's fields; dsd adds metrics.phase_top1 {dense,
                               sparse, redense: top-1 at each phase's end}, metrics.sparsity,
                               histograms {layer, png, json, phases (each with its counts
                               over [-limit, limit]), compare_png}, dsd (the
                               schedule run); distill adds metrics.teacher_top1/_top5,
                               distill (the method's settings), stage1 (fitnets' hint stage)
    sensitivity  metrics       {test_top1 (the source), layers, mean_top1: {s10 .. s90},
                               most_sensitive_layer, most_sensitive_top1,
                               mean_suggested_sparsity, test_protocol}
                 rows          [{layer, role, sparsity, top1, drop}]; suggested {layer:
                               sparsity}, max_drop, png, json

Group (in ``groups``; one per combination of variants, over the seeds that are done)::

    name, variants, kind       the cells' name without "-s<seed>", their variants and kind
    cells, seeds, n            the done cells' names and seeds, and how many
    metrics                    {test_top1, test_top5, best_test_top1: {mean, stdev, min, max}}
    parameters, macs, fp32_bytes, file_bytes   of the first done cell (equal across seeds)
    seconds                    {mean, stdev, min, max} of ``cell_seconds`` over the cells
    published                  the published values, ours_percent the mean over seeds
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import yaml

from squeezelab.fileio import atomic_write_bytes, json_default

SCHEMA = "squeezelab-study-results"
SCHEMA_VERSION = 1
STATUSES = ("done", "skipped", "failed", "pending")
#: settings that only say where a cell's files go or how it talks: two records that differ
#: only in these ran the same experiment
PLACEMENT_KEYS = ("out_dir", "run_name", "progress", "log_every")
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def machine() -> dict[str, Any]:
    """What a cell ran on: CPU model, cores, the SIMD flags that set CPU training speed, the
    torch and Python versions, the intra-op threads and the GPU, if any."""
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_flags": [],
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    if model:
        info["cpu"] = model.group(1).strip()
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # bf16 speed depends on these
    info["cpu_flags"] = [f for f in wanted if flags and f in flags.group(1).split()]
    return info


@lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(commit, whether tracked files differ from it) of the checkout squeezelab runs from;
    (None, None) outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True,
                                 text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit.strip(), (None if status is None else bool(status.strip()))


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=json_default) + "\n").encode())


def read_record(path: Path) -> dict[str, Any] | None:
    """The cell record at ``path``, or None when there is none. Records are written atomically,
    so one that does not parse was damaged after the fact: that is an error naming it."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cell result {path} is not readable JSON ({e}); delete it to run the "
                         "cell again") from None
    if not isinstance(record, dict) or record.get("status") not in STATUSES:
        raise ValueError(f"cell result {path} is not a study cell record (no valid status); "
                         "delete it to run the cell again")
    return record


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the placement keys (the output folder may move)."""
    return {k: v for k, v in config.items() if k not in PLACEMENT_KEYS}


def config_differences(a: dict[str, Any], b: dict[str, Any],
                       defaults: dict[str, Any] | None = None) -> list[str]:
    """``key: a-value != b-value`` for every setting two configs disagree on. With
    ``defaults`` (the settings class' defaults), a key that ``a`` (a record written by an older
    squeezelab) lacks is no difference where ``b`` holds its default: a setting added since
    does not make every finished cell a different experiment."""
    return _differences(comparable_config(a), comparable_config(b), defaults or {}, "")


_ABSENT = object()


def _differences(a: dict[str, Any], b: dict[str, Any], defaults: dict[str, Any],
                 prefix: str) -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb, default = a.get(k, _ABSENT), b.get(k, _ABSENT), defaults.get(k, _ABSENT)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, default if isinstance(default, dict) else {},
                                f"{prefix}{k}.")
        elif va is _ABSENT and vb is not _ABSENT and default is not _ABSENT and vb == default:
            continue
        elif va != vb:
            show = [None if v is _ABSENT else v for v in (va, vb)]
            out.append(f"{prefix}{k}: {show[0]!r} != {show[1]!r}")
    return out


def with_ours(published: Iterable[dict[str, Any]], metrics: dict[str, Any] | None
              ) -> list[dict[str, Any]]:
    """The published values with ours beside them: ``ours_percent`` is our ``test_<metric>``
    in percent (None when not measured) and ``difference_points`` ours minus theirs."""
    out = []
    for p in published:
        ours = (metrics or {}).get(f"test_{p.get('metric')}")
        ours_percent = None if ours is None else 100.0 * ours
        out.append({**p, "ours_percent": ours_percent,
                    "difference_points": None if ours_percent is None
                    else ours_percent - p["percent"]})
    return out


def spread(values: list[float]) -> dict[str, float] | None:
    """Mean, sample standard deviation (0 for one value), min and max; None for no values."""
    if not values:
        return None
    return {"mean": statistics.mean(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def cell_seconds(record: dict[str, Any]) -> float | None:
    """A cell's wall seconds over every process that worked on it, None where unrecorded.

    ``seconds`` is the wall time of the process that finished the cell: for a train cell
    resumed after an interruption, only its last epochs. Its epochs' own seconds
    (``train_seconds``) are summed over every process, so the larger of the two is the cell's
    time (short by the earlier processes' start-up only)."""
    values = [record.get(key) for key in ("seconds", "train_seconds")]
    values = [float(v) for v in values
              if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(values) if values else None


def group_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One group per combination of variants (the cells that differ only in seed), in plan
    order, with the mean and spread of the done cells' accuracies."""
    order: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        key = json.dumps([r.get("kind"), r.get("variants")], sort_keys=True)
        order.setdefault(key, []).append(r)
    groups = []
    for members in order.values():
        done = [r for r in members if r["status"] == "done"]
        first = done[0] if done else members[0]
        metrics = {}
        for key in ("test_top1", "test_top5", "best_test_top1"):
            values = [r["metrics"][key] for r in done
                      if r.get("metrics", {}).get(key) is not None]
            metrics[key] = spread(values)
        mean_metrics = {k: (v["mean"] if v else None) for k, v in metrics.items()}
        name = re.sub(r"-?s\d+$", "", first["name"]) or first["name"]
        groups.append({
            "name": name, "variants": first.get("variants"), "kind": first.get("kind"),
            "cells": [r["name"] for r in done], "seeds": [r["seed"] for r in done],
            "n": len(done),
            "metrics": metrics,
            **{k: first.get(k) for k in ("parameters", "macs", "fp32_bytes", "file_bytes")},
            "seconds": spread([s for s in map(cell_seconds, done) if s is not None]),
            "published": with_ours([{k: v for k, v in p.items()
                                     if k not in ("ours_percent", "difference_points")}
                                    for p in first.get("published", [])], mean_metrics),
        })
    return groups


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def settings_sha256(path: Path, budget: str | None = None) -> str:
    """A hash of what a YAML recipe says, not how: its parsed values, so that editing its
    comments or layout does not make earlier results look out of date. With ``budget``: only
    what a run at that budget reads (its own entry of ``budgets``, not the others'), so a
    results file made at one budget is not made to look out of date by another's change."""
    values = yaml.safe_load(Path(path).read_text())
    if budget is not None and isinstance(values, dict) and isinstance(values.get("budgets"), dict):
        values = {**values, "budgets": {budget: values["budgets"].get(budget)}}
    text = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


__all__ = ["SCHEMA", "SCHEMA_VERSION", "STATUSES", "cell_seconds", "config_differences",
           "git_state", "group_records", "machine", "read_record", "spread", "with_ours",
           "write_json"]
