"""Plots regenerated from recorded runs: training curves of one or more runs side by side, and
the per-layer pruning sensitivity curves (``squeezelab sensitivity``)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

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


#: line styles cycled within a panel, so two neighbouring depths differ by more than a shade
_LINE_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def sensitivity_figure(result: Mapping[str, Mapping[float, float]],
                       roles: Mapping[str, str] | None = None, metric_name: str = "metric",
                       title: str = "Pruning sensitivity, one layer at a time"):
    """The sensitivity curves as a matplotlib Figure: small multiples, one panel per layer role
    (``roles``: layer -> "squeeze" / "expand3x3" / ...; None: one panel), each line coloured by
    the layer's depth in the network on a continuous colormap (the same depth, the same hue in
    every panel), line styles and markers cycling, and each panel's legend outside its axes.
    A SqueezeNet has 26 layers: on one axes with the default colour cycle, lines repeat colours
    and no legend fits."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not result:
        raise ValueError("the sensitivity result holds no layers: nothing to plot")
    names = list(result)  # network order: the depth of each layer
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault((roles or {}).get(name, "layers"), []).append(name)
    cmap = colormaps["viridis"]
    fig = Figure(figsize=(9.5, 0.6 + 2.4 * len(groups)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (role, members) in zip(axes, groups.items()):
        for k, name in enumerate(members):
            row = result[name]
            levels = sorted(row)
            depth = names.index(name) / max(len(names) - 1, 1)
            ax.plot(levels, [row[s] for s in levels], color=cmap(0.92 * depth),
                    linestyle=_LINE_STYLES[k % len(_LINE_STYLES)],
                    marker=_MARKERS[k % len(_MARKERS)], markersize=3.5, linewidth=1.3,
                    label=name.removesuffix(".weight"))
        ax.set_title(f"{role} ({len(members)} layer{'s' if len(members) != 1 else ''})",
                     fontsize=9, loc="left")
        ax.set_ylabel(metric_name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  ncols=1 if len(members) <= 10 else 2, title="layer (colour: depth)",
                  title_fontsize=7)
    axes[-1].set_xlabel("sparsity of the layer (fraction pruned, the others dense)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_sensitivity(result: Mapping[str, Mapping[float, float]], path: str | Path,
                     metric_name: str = "metric", roles: Mapping[str, str] | None = None,
                     title: str = "Pruning sensitivity, one layer at a time") -> Path:
    """Write :func:`sensitivity_figure` as a PNG; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sensitivity_figure(result, roles, metric_name, title).savefig(path, format="png", dpi=120)
    return path
