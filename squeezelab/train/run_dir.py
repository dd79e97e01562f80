"""The run directory: config.yaml, metrics.jsonl, checkpoints/{last,best}.*, summary.json (and
skipped_images.txt when unreadable images were left out).

A run is *finished* once summary.json is written, *unfinished* while it has metrics or a last
checkpoint but no summary (interrupted, or still running), and *new* otherwise.

Only rank 0 writes. Every file is written atomically or appended line by line, so a run killed
at any moment leaves readable files behind.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from squeezelab.fileio import atomic_write_bytes


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def status(self) -> str:
        """"finished", "unfinished" or "new" (see the module docstring)."""
        if self.summary_path.is_file():
            return "finished"
        if self.metrics_path.exists() or self.last.with_name("last.json").exists():
            return "unfinished"
        return "new"

    def next_free(self) -> RunDir:
        """The first of ``NAME-2``, ``NAME-3``, ... beside this directory that does not exist."""
        n = 2
        while (candidate := self.path.with_name(f"{self.path.name}-{n}")).exists():
            n += 1
        return RunDir(candidate)

    def write_lines(self, name: str, lines: list[str]) -> None:
        atomic_write_bytes(self.path / name, "".join(f"{line}\n" for line in lines).encode())

    def create(self) -> RunDir:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, after_epoch: int) -> None:
        """Drop records of epochs after ``after_epoch`` (1-based), written before a resume."""
        if not self.metrics_path.exists():
            return
        kept = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("epoch", 0) <= after_epoch]
        atomic_write_bytes(self.metrics_path, ("\n".join(kept) + "\n" if kept else "").encode())

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        atomic_write_bytes(self.path / name, json.dumps(data, indent=2).encode())


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run directory's metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {path} does not exist")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The settings a run was made with, as its config.yaml records them (resolved: the
    recipe, the flags and the autotune's choices)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {path} does not exist")
    return yaml.safe_load(path.read_text()) or {}


def environment() -> dict[str, Any]:
    """What a figure was measured on: saved with every run and benchmark."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                env["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env
