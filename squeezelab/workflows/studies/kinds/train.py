"""The ``train`` cell: one ordinary ``train()`` run of a TrainConfig.

Resumes exactly: a cell whose run folder holds a last checkpoint continues from it (with the
precision and memory layout that run's autotune chose), so a study stopped in the middle of a
cell loses at most the steps since its last save. A cell whose data is not on this machine
(the CIFAR-100 archive, say) is skipped with the reason. The record holds the final and best
test accuracy, parameters, MACs at the data's image size, fp32 bytes and the bytes of the
written weights file, the timings, and the per-epoch curves of metrics.jsonl.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from squeezelab.config import ConfigError
from squeezelab.data import resolve_default_cifar10
from squeezelab.data.cache import default_cache_dir
from squeezelab.data.cifar import CIFAR_SPECS
from squeezelab.metrics import count_macs, count_parameters
from squeezelab.train.config import TrainConfig
from squeezelab.train.data import load_run_data
from squeezelab.train.loop import TrainingDiverged, train
from squeezelab.train.run_dir import RunDir, read_run_config
from squeezelab.workflows.studies.registry import (
    CellContext,
    CellInterrupted,
    pin_speed,
    register_cell_kind,
)
from squeezelab.workflows.studies.results import config_differences

#: settings a study gives each cell itself: the seed from ``seeds:``, the folder from ``--out``
PLACED_BY_STUDY = ("seed", "out_dir", "run_name")
#: per-epoch fields kept in the record's curves
CURVE_KEYS = ("epoch", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "lr",
              "seconds", "images_per_s")


def place_train_run(values: dict[str, Any], seed: int, run_dir: Path,
                    where: str) -> dict[str, Any]:
    """``values`` with the cell's seed and run folder; the recipe may not set them itself."""
    for key in PLACED_BY_STUDY:
        if key in values:
            how = "seeds:" if key == "seed" else "the study's output folder (--out)"
            raise ConfigError(f"{where}: {key!r} is set by the study from {how}; remove it "
                              "from the recipe")
    return {**values, "seed": seed, "out_dir": str(run_dir.parent), "run_name": run_dir.name}


def train_data_missing(cfg: TrainConfig) -> str | None:
    """Why ``cfg``'s data is not here (an official archive that is not in its folder and may
    not be downloaded, a class folder that does not exist), or None when it is."""
    source = cfg.data or resolve_default_cifar10()
    if source in CIFAR_SPECS:
        if cfg.download:
            return None
        spec = CIFAR_SPECS[source]
        root = Path(cfg.data_root) if cfg.data_root else default_cache_dir()
        path = root.expanduser().absolute() / spec.filename
        if not path.is_file():
            return (f"the {spec.name} archive {spec.filename} is not at {path} (place it there, "
                    "or set download: true to fetch it)")
        return None
    if not Path(source).expanduser().is_dir():
        return f"the data folder {source} does not exist"
    return None


def _check_same_run(cfg: TrainConfig, saved: dict[str, Any], run_dir: Path) -> None:
    """An interrupted run is continued only under the settings it started with."""
    planned = cfg.to_dict()
    # settings the autotune resolves are saved as chosen ("auto" -> "bf16"): not a change
    auto = [k for k, unset in (("precision", "auto"), ("channels_last", None))
            if planned.get(k) == unset]
    differences = config_differences({k: v for k, v in saved.items() if k not in auto},
                                     {k: v for k, v in planned.items() if k not in auto},
                                     defaults=TrainConfig().to_dict())
    if differences:
        raise ConfigError(f"the interrupted run in {run_dir} was started with other settings "
                          f"than the study asks for now ({'; '.join(differences[:4])}); "
                          "delete that folder to start the cell again, or choose another --out")


def cell_data(cfg: TrainConfig, ctx: CellContext):
    """The cell's (train, test) data, decoded once per process for cells that share it (only
    the latest kept: a grid's cells mostly share one data setting, and a CIFAR split is
    ~150 MB). Every kind that trains or scores goes through it, so a cell that starts from a
    train cell's model reuses that cell's decoded images."""
    key = repr((cfg.data or resolve_default_cifar10(), cfg.data_root, cfg.image_size,
                cfg.limit_train, cfg.limit_test, cfg.data_seed, cfg.skip_bad_images))
    cached = ctx.cache.get("train_data")
    if cached is None or cached[0] != key:
        ctx.cache["train_data"] = (key, load_run_data(cfg))
    return ctx.cache["train_data"][1]


def training_record(result, data, run_dir: Path, resumed: bool,
                    extra_curve_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of a cell that ran ``train()`` (``result``: its RunResult) as a ``train``
    cell records them: the final and best test accuracy, parameters, MACs, the weights file
    of the best epoch, timings and the per-epoch curves (with ``extra_curve_keys``)."""
    history = result.history
    final = result.final
    run = RunDir(run_dir)
    best_file = run.best.with_name("best.safetensors")
    tested = [r["test_top1"] for r in history if "test_top1" in r]
    seconds = [r["seconds"] for r in history if "seconds" in r]
    # epochs logged before CPU time was recorded leave the sum unknown, not low
    cpu = [r.get("cpu_seconds") for r in history]
    parameters = count_parameters(result.model)
    image_hw = tuple(data.train.image_size)
    return {
        "metrics": {
            "test_top1": final.get("test_top1"),
            "test_top5": final.get("test_top5"),
            "test_loss": final.get("test_loss"),
            "best_test_top1": max(tested) if tested else None,
            "train_loss": final.get("train_loss"),
            "train_top1": final.get("train_top1"),
            "epochs": len(history),
            "test_protocol": final.get("test_protocol"),
        },
        "parameters": parameters,
        "macs": count_macs(result.model, image_hw),
        "fp32_bytes": 4 * parameters,
        "file_bytes": best_file.stat().st_size if best_file.is_file() else None,
        "file": str(best_file) if best_file.is_file() else None,
        "image_size": list(image_hw),
        "num_classes": data.train.num_classes,
        "train_images": len(data.train),
        "test_images": len(data.test),
        "train_seconds": sum(seconds),
        "train_cpu_seconds": sum(cpu) if history and None not in cpu else None,
        "seconds_per_epoch": statistics.mean(seconds) if seconds else None,
        "images_per_s": statistics.mean(r["images_per_s"] for r in history)
        if history and all("images_per_s" in r for r in history) else None,
        "resumed": resumed,
        "run_dir": str(run.path),
        "metrics_path": str(run.metrics_path),
        "curves": [{k: r[k] for k in (*CURVE_KEYS, *extra_curve_keys) if k in r}
                   for r in history],
    }


@register_cell_kind("train", settings=TrainConfig, prepare=place_train_run,
                    missing_data=train_data_missing, failures=(TrainingDiverged,))
def run_train_cell(cfg: TrainConfig, ctx: CellContext) -> dict[str, Any]:
    """Train ``cfg`` in ``ctx.run_dir`` (resuming what is there) and return its record."""
    run = RunDir(ctx.run_dir)
    resume = (run.checkpoints / "last.json").is_file()
    if resume:
        saved = read_run_config(run.path)
        _check_same_run(cfg, saved, run.path)
        # the autotune's choice is part of the run: the resumed part must use the same one
        cfg = cfg.replace(precision=saved.get("precision", cfg.precision),
                          channels_last=saved.get("channels_last", cfg.channels_last))
    else:
        cfg = pin_speed(cfg, ctx)
        if run.metrics_path.exists():
            run.metrics_path.unlink()  # epochs logged by a run that died before saving them
    if not ctx.progress:
        cfg = cfg.replace(progress=False)
    data = cell_data(cfg, ctx)
    t0 = time.perf_counter()
    result = train(cfg, resume=resume, run_dir=run.path, data=data)
    if result.interrupted:
        raise CellInterrupted(f"cell {ctx.name} stopped at its last checkpoint in {run.path}")
    wall = time.perf_counter() - t0
    history = result.history
    resolved = read_run_config(run.path)
    return {
        **training_record(result, data, run.path, resume),
        "run_seconds": wall,
        "auto_settings": {k: resolved.get(k) for k in ("precision", "channels_last")},
        "pgd_perturbations": sum(r.get("pgd_perturbations", 0) for r in history),
    }
