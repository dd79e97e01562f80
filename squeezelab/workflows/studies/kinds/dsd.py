"""The ``dsd`` cell: dense-sparse-dense training (Han et al., ICLR 2017, arXiv 1607.04381;
``workflows/dsd.py``'s ``run_dsd``), from scratch or from the model ``source`` names, and the
dense run it is compared with.

Recipe values: ``dsd`` (a DSDConfig: ``sparsity``, ``epochs: DENSE-SPARSE-REDENSE``,
``redense_lr_factor``, ``lr_schedule``, ``layers``/``exclude``, ``plot_layer``), ``train``
(TrainConfig fields: from scratch the whole run's, model included; from a source, over the
source's own training settings: its data and subset, a cosine from ``lr`` with no warm-up),
``source`` (a checkpoint or ``{cell: ...}``; DSD then starts sparse: ``epochs: SPARSE-REDENSE``,
and a ``train`` model, where given, must be the source's),
``method`` and ``compare_with``.

``method: dense`` is the comparison: the same epochs trained dense under the run's own schedule
(the phases' masks prune nothing: a DSDHook at sparsity 0 with the re-dense rate unscaled, so it
is an ordinary run), with the weight histograms taken at the same epochs as DSD's. From a
source it is the dense-only continued training the paper's gains are measured against.

Each cell saves the histogram of ``dsd.plot_layer``'s weights at the end of every phase
(``dsd_weights.png`` and ``.json`` in its run folder, by ``plot_weight_distributions``);
``compare_with: {cell: ...}`` (another ``dsd`` cell) also draws the two cells' histograms
phase by phase in one figure (the conv1 weights of the vanilla and the residual SqueezeNet, say).
The record is a train cell's (accuracies, curves, sizes, timings) with the top-1 at the end of
each phase and the figures' paths.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from squeezelab.config import ConfigBase, ConfigError
from squeezelab.train.loop import TrainingDiverged
from squeezelab.workflows.dsd import DSDConfig, run_dsd
from squeezelab.workflows.studies.kinds.train import training_record
from squeezelab.workflows.studies.model_cells import (
    check_train_section,
    continue_section,
    data_for,
    fresh_or_resume,
    load_source,
    place_seed,
    recorded_top1,
    resumed_config,
    source_checkpoint,
    train_config,
)
from squeezelab.workflows.studies.registry import CellContext, CellInterrupted, register_cell_kind

METHODS = ("dsd", "dense")
#: what the DSDHook writes into the run folder at the end (workflows/dsd.py)
HISTOGRAMS = "dsd_weights"
#: TrainConfig fields the cell sets itself (epochs: the phases' sum)
FIXED_TRAIN_FIELDS = ("epochs", "init_from", "seed", "out_dir", "run_name")


@dataclass
class DSDCellSettings(ConfigBase):
    """A ``dsd`` cell (see the module docstring); ``seed`` is placed by the study."""

    dsd: DSDConfig = field(default_factory=DSDConfig)
    train: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    method: str = "dsd"
    compare_with: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.dsd, Mapping):
            self.dsd = DSDConfig.from_dict(self.dsd, source="dsd")
        if not isinstance(self.dsd, DSDConfig):
            raise ConfigError(f"dsd must be a mapping of DSDConfig fields, got "
                              f"{type(self.dsd).__name__}")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got "
                              f"{self.method!r}")
        if self.source is not None and self.dsd.dense_epochs:
            raise ConfigError(f"a cell with a source starts from its trained model, so it has "
                              f"no dense phase: give dsd epochs as SPARSE-REDENSE "
                              f"({self.dsd.sparse_epochs}-{self.dsd.redense_epochs}), not "
                              f"{self.dsd.dense_epochs} dense epochs")
        self.train = check_train_section(self.train, "dsd", FIXED_TRAIN_FIELDS)
        for key in ("source", "compare_with"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{key} must be a checkpoint path, {{cell: ...}} or null, "
                                  f"got {value!r}")

    def schedule(self) -> DSDConfig:
        """The DSDConfig the run trains under: the cell's, or for ``method: dense`` the same
        epochs with nothing pruned and the run's own schedule unscaled."""
        if self.method == "dense":
            return self.dsd.replace(sparsity=0.0, lr_schedule="run", redense_lr_factor=1.0)
        return self.dsd


def _check_source_model(train: Mapping[str, Any], spec: Mapping[str, Any],
                        checkpoint: Path) -> None:
    """A cell with a source trains the source's model: a ``train`` model or model_args (a
    study's shared settings, say) must be the source's."""
    kwargs = spec.get("kwargs") or {}
    wrong = []
    if "model" in train and train["model"] != spec.get("name"):
        wrong.append(f"model {train['model']!r} (the source is {spec.get('name')!r})")
    for key, value in (train.get("model_args") or {}).items():
        if kwargs.get(key) != value:
            wrong.append(f"model_args {key}={value!r} (the source's: {kwargs.get(key)!r})")
    if wrong:
        raise ConfigError(f"the cell's train: asks for {'; '.join(wrong)}, but a cell with a "
                          f"source continues the model of {checkpoint}")


def _phase_top1(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The test top-1 at the last scored epoch of each phase (``redense_2``: cycle 2)."""
    out: dict[str, float] = {}
    for r in history:
        if r.get("phase") and "test_top1" in r:
            cycle = r.get("dsd_cycle", 0)
            out[r["phase"] if cycle <= 1 else f"{r['phase']}_{cycle}"] = r["test_top1"]
    return out


def _read_histograms(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / f"{HISTOGRAMS}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {path.name}: the DSD run there has not "
                                "finished (compare_with needs a finished dsd cell)")
    return json.loads(path.read_text())


def _model_name(run_dir: Path) -> str:
    config = run_dir / "config.yaml"
    saved = yaml.safe_load(config.read_text()) if config.is_file() else {}
    return (saved or {}).get("model") or "?"


def plot_histogram_comparison(runs: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
                              path: str | Path) -> Path:
    """One panel per phase end, each run's weight histogram (``DSDHook.histograms``) drawn as
    a density over its own weight values, the exact zeros (pruned weights) counted in the
    legend; the panels follow the first run's phases (the runs must have the same ones)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    first = runs[0][1]
    for label, hists in runs[1:]:
        if [(h["phase"], h.get("cycle")) for h in hists] != \
                [(h["phase"], h.get("cycle")) for h in first]:
            raise ValueError(f"{label}'s phases differ from {runs[0][0]}'s: the histograms "
                             "compare phase by phase, so the cells need the same DSD epochs")
    path = Path(path)
    fig, axes = plt.subplots(1, len(first), figsize=(3.8 * len(first), 3.2), squeeze=False)
    for i, ax in enumerate(axes[0]):
        for label, hists in runs:
            h = hists[i]
            counts = torch.tensor(h["counts"], dtype=torch.float64)
            counts[len(counts) // 2] -= h["zeros"]  # exact zeros are counted apart
            edges = torch.linspace(-h["limit"], h["limit"], len(counts) + 1)
            width = float(edges[1] - edges[0])
            density = counts / (h["numel"] * width)
            ax.stairs(density.tolist(), edges.tolist(),
                      label=f"{label} ({100 * h['zeros'] / h['numel']:.0f}% zero)")
        ax.set_title(f"{first[i]['phase']} (epoch {first[i]['epoch']})", fontsize=9)
        ax.set_xlabel("weight")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("density")
    layers = sorted({h.get("layer", "") for _, hists in runs for h in hists})
    fig.suptitle(f"Weights of {', '.join(layers)} at the end of each phase", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@register_cell_kind("dsd", settings=DSDCellSettings, prepare=place_seed,
                    failures=(TrainingDiverged,))
def run_dsd_cell(settings: DSDCellSettings, ctx: CellContext) -> dict[str, Any]:
    """Train the cell's DSD (or dense) schedule in its run folder, resuming an interrupted run,
    and return its record."""
    schedule = settings.schedule()
    source: dict[str, Any] | None = None
    checkpoint = None
    if settings.source is not None:
        checkpoint = source_checkpoint(settings.source)
        meta = load_source(settings.source).meta
        _check_source_model(settings.train, meta.get("model") or {}, checkpoint)
        values = continue_section(meta, {k: v for k, v in settings.train.items()
                                         if k not in ("model", "model_args")}, settings.seed)
        source = {"path": str(checkpoint), "top1": recorded_top1(meta)}
    else:
        values = {**settings.train, "seed": settings.seed}
    cfg = train_config({**values, "epochs": schedule.total_epochs}, ctx, f"cell {ctx.name}")
    resume = fresh_or_resume(ctx.run_dir)
    if resume:
        cfg = resumed_config(cfg, ctx.run_dir)
    data = data_for(cfg, ctx)
    result = run_dsd(cfg, schedule, data=data, run_dir=ctx.run_dir, resume=resume,
                     from_checkpoint=checkpoint)
    if result.interrupted:
        raise CellInterrupted(f"cell {ctx.name} stopped at its last checkpoint in "
                              f"{ctx.run_dir}")
    record = training_record(result, data, ctx.run_dir, resume,
                             extra_curve_keys=("phase", "dsd_cycle", "sparsity"))
    record["metrics"]["phase_top1"] = _phase_top1(result.history)
    record["metrics"]["sparsity"] = schedule.sparsity
    if source is not None:
        record["source"] = source
    histograms = _read_histograms(ctx.run_dir)
    record["histograms"] = {
        "layer": histograms[0].get("layer") if histograms else None,
        "png": str(ctx.run_dir / f"{HISTOGRAMS}.png"),
        "json": str(ctx.run_dir / f"{HISTOGRAMS}.json"),
        # the counts too (a few hundred numbers): the report draws them from the record,
        # without the run folder
        "phases": [{k: h[k] for k in ("phase", "cycle", "epoch", "zeros", "numel", "limit",
                                      "counts") if k in h} for h in histograms],
    }
    if settings.compare_with is not None:
        other = Path(settings.compare_with)
        png = plot_histogram_comparison(
            [(f"{other.name} ({_model_name(other)})", _read_histograms(other)),
             (f"{ctx.name} ({_model_name(ctx.run_dir)})", histograms)],
            ctx.run_dir / f"{HISTOGRAMS}_vs_{other.name}.png")
        record["histograms"]["compare_png"] = str(png)
    record["dsd"] = {"method": settings.method, **schedule.to_dict()}
    return record


__all__ = ["DSDCellSettings", "plot_histogram_comparison", "run_dsd_cell"]
