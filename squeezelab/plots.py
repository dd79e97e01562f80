"""Plots regenerated from recorded runs: training curves of one or more runs side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

from squeezelab.train.run_dir import read_metrics  # noqa: E402


def plot_runs(run_dirs: Sequence[str | Path], output: str | Path) -> Path:
    """Loss (train, test) and top-1 (train, test) against epoch for each run, as one PNG."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run_dir in run_dirs:
        records = read_metrics(run_dir)
        if not records:
            raise ValueError(f"{run_dir}/metrics.jsonl holds no epochs yet")
        label = Path(run_dir).name
        epochs = [r["epoch"] for r in records]
        (line,) = ax_loss.plot(epochs, [r["train_loss"] for r in records], label=f"{label} train")
        color = line.get_color()
        tested = [r for r in records if "test_top1" in r]
        ax_acc.plot(epochs, [100 * r["train_top1"] for r in records], color=color,
                    label=f"{label} train")
        if tested:
            ax_loss.plot([r["epoch"] for r in tested], [r["test_loss"] for r in tested],
                         color=color, linestyle="--", marker="o", label=f"{label} test")
            ax_acc.plot([r["epoch"] for r in tested], [100 * r["test_top1"] for r in tested],
                        color=color, linestyle="--", marker="o", label=f"{label} test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output
