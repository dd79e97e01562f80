"""Run folders written by hand, as ``squeezelab train`` leaves them (config.yaml and
metrics.jsonl), for the code that reads finished or unfinished runs: plots, accounts."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import yaml


def fake_run(path: Path, epochs: int, logged: int, *, seconds: float = 900.0,
             eval_seconds: float = 90.0, score_every: int = 2,
             top1: Callable[[int], float] = lambda e: 0.09 * e) -> Path:
    """A run of ``epochs`` planned, ``logged`` of them done: train loss 2/e, train top-1 0.1 e,
    ``seconds`` each; every ``score_every``-th scored on the test images (test loss 1.5/e,
    top-1 ``top1(e)``, ``eval_seconds``)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"epochs": epochs, "lr": 0.1}))
    lines = []
    for e in range(1, logged + 1):
        record = {"epoch": e, "train_loss": 2.0 / e, "train_top1": 0.1 * e, "seconds": seconds}
        if e % score_every == 0:
            record.update(test_loss=1.5 / e, test_top1=top1(e), eval_seconds=eval_seconds)
        lines.append(json.dumps(record))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return path
