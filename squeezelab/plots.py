"""Plots regenerated from recorded runs: training curves of one or more runs side by side (against
epochs, the fraction of each run's schedule, or hours), and the per-layer pruning sensitivity
curves (``squeezelab sensitivity``)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

from squeezelab.train.run_dir import read_metrics, read_run_config  # noqa: E402

#: what ``plot_runs`` can draw the curves against, and the axis label of each. ``fraction``
#: lines up runs of different lengths (a 150-epoch run beside a 200-epoch one: the same point of
#: their schedules); ``hours``, runs on different machines or recipes against the time they took.
X_AXES = {
    "epoch": "epoch",
    "fraction": "fraction of the run's schedule (epoch / its epochs)",
    "hours": "hours of the run's own training and scoring",
}


def run_curves(run_dir: str | Path, x: str = "epoch") -> dict[str, list[float]]:
    """The points ``plot_runs`` draws for one run: ``x`` with ``train_loss`` and ``train_top1``
    (%) for every epoch logged, ``test_x`` with ``test_loss`` and ``test_top1`` (%) for the
    epochs scored on the test images. ``x``: one of ``X_AXES``; ``hours`` sums each epoch's
    training and scoring seconds (an interrupted run's pieces add up, the gaps between them do
    not)."""
    if x not in X_AXES:
        raise ValueError(f"x must be one of {sorted(X_AXES)}, got {x!r}")
    records = read_metrics(run_dir)
    if not records:
        raise ValueError(f"{run_dir}/metrics.jsonl holds no epochs yet")
    if x == "epoch":
        xs = [float(r["epoch"]) for r in records]
    elif x == "fraction":
        total = read_run_config(run_dir).get("epochs")
        if not isinstance(total, int) or total < 1:
            raise ValueError(f"{run_dir}/config.yaml names no epoch count (epochs: {total!r}): "
                             "cannot draw it against the fraction of its schedule")
        xs = [r["epoch"] / total for r in records]
    else:
        xs, hours = [], 0.0
        for r in records:
            hours += (r.get("seconds", 0.0) + r.get("eval_seconds", 0.0)) / 3600
            xs.append(hours)
    tested = [(x_, r) for x_, r in zip(xs, records) if "test_top1" in r]
    return {"x": xs, "train_loss": [r["train_loss"] for r in records],
            "train_top1": [100 * r["train_top1"] for r in records],
            "test_x": [x_ for x_, _ in tested],
            "test_loss": [r.get("test_loss", float("nan")) for _, r in tested],
            "test_top1": [100 * r["test_top1"] for _, r in tested]}


def plot_runs(run_dirs: Sequence[str | Path], output: str | Path, x: str = "epoch") -> Path:
    """Loss (train, test) and top-1 (train, test) of each run against ``x`` (one of
    ``X_AXES``: epoch, fraction of its schedule, or hours), as one PNG."""
    curves = [(Path(run_dir).name, run_curves(run_dir, x)) for run_dir in run_dirs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, c in curves:
        (line,) = ax_loss.plot(c["x"], c["train_loss"], label=f"{label} train")
        color = line.get_color()
        ax_acc.plot(c["x"], c["train_top1"], color=color, label=f"{label} train")
        if c["test_x"]:
            ax_loss.plot(c["test_x"], c["test_loss"], color=color, linestyle="--", marker="o",
                         label=f"{label} test")
            ax_acc.plot(c["test_x"], c["test_top1"], color=color, linestyle="--", marker="o",
                        label=f"{label} test")
    # train loss is the objective the run optimised (a distillation or penalty term included,
    # so it can sit far above the test cross-entropy): a log axis keeps both readable
    ax_loss.set(xlabel=X_AXES[x], ylabel="loss (log scale)", yscale="log",
                title="loss (train: the objective optimised; test: cross-entropy)")
    ax_acc.set(xlabel=X_AXES[x], ylabel="top-1 accuracy (%)", title="accuracy")
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
