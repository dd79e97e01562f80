"""What the kinds of study cell that start from a model share (compress, quantize, dsd,
distill, sensitivity: ``kinds/``): finding the source checkpoint a setting names, the training
settings of the runs that continue it, the cell's data, the run folder of a cell that trains,
and the checks every such kind makes of its recipe values.

A source is a checkpoint path or, through a cell reference (``source: {cell: dense}``,
recipe.py), another cell's run folder: ``source_checkpoint`` turns a folder into the checkpoint
it holds (a training run's best, else its last; a quantize cell's ``model``).
"""
from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from squeezelab.checkpoint import checkpoint_paths, resolve_checkpoint
from squeezelab.compress.format.checkpoints import Compressible, load_compressible
from squeezelab.config import ConfigError
from squeezelab.train.config import TrainConfig, data_seed_of
from squeezelab.train.evaluate import EvalProtocol, data_logits
from squeezelab.train.run_dir import RunDir, read_run_config
from squeezelab.workflows.deep_compression import evaluate_top1
from squeezelab.workflows.fine_tuning import fine_tune_train_section
from squeezelab.workflows.studies.kinds.train import cell_data
from squeezelab.workflows.studies.registry import CellContext, pin_speed

#: the checkpoint stem a cell that writes a model checkpoint (quantize) puts in its run folder
MODEL_STEM = "model"
#: TrainConfig fields the study places itself (the seed from ``seeds:``, folders from --out)
PLACED_TRAIN_FIELDS = ("seed", "out_dir", "run_name")


def source_checkpoint(path: str | Path) -> Path:
    """The checkpoint ``path`` names: a run folder's best checkpoint (else its last), a cell
    folder's ``model`` checkpoint, or the path itself (a checkpoint stem, .json or
    .safetensors)."""
    p = Path(path)
    if p.is_dir() and not (p / "checkpoints").is_dir() and \
            checkpoint_paths(p / MODEL_STEM)[0].is_file():
        return checkpoint_paths(p / MODEL_STEM)[0]
    return resolve_checkpoint(p)


def check_source(source: object) -> None:
    """A cell's ``source`` setting, once the study has resolved ``{cell: ...}`` references:
    a non-empty checkpoint path (a ConfigError otherwise)."""
    if not isinstance(source, str) or not source:
        raise ConfigError(f"source must be a checkpoint path or {{cell: ...}}, got {source!r}")


def source_exists(path: str | Path) -> bool:
    """Whether ``path`` holds a checkpoint ``source_checkpoint`` finds (both of its files)."""
    json_path, st_path = checkpoint_paths(source_checkpoint(path))
    return json_path.is_file() and st_path.is_file()


def load_source(path: str | Path, what: str = "source") -> Compressible:
    """The model (masks and meta too) of the checkpoint ``path`` names; a missing one is a
    FileNotFoundError naming the setting and what was looked for."""
    checkpoint = source_checkpoint(path)
    if not source_exists(path):
        raise FileNotFoundError(f"{what} {path}: no checkpoint at {checkpoint} (a run folder "
                                "holds checkpoints/best.json once its run has scored an epoch)")
    return load_compressible(checkpoint)


def recorded_top1(meta: Mapping[str, Any]) -> float | None:
    """The top-1 a checkpoint records of itself: its run's best (what ``best`` was chosen by),
    else the epoch's, else a compression command's; None when it records none."""
    for value in (meta.get("best_top1"), (meta.get("metrics") or {}).get("test_top1"),
                  meta.get("top1")):
        if isinstance(value, (int, float)) and value >= 0:
            return float(value)
    return None


def place_seed(values: dict[str, Any], seed: int, run_dir: Path, where: str) -> dict[str, Any]:
    """``prepare`` of these kinds: the cell's seed from ``seeds:`` (the recipe may not set
    it, nor the seed and folders of a ``train:`` section: the study places outputs)."""
    if "seed" in values:
        raise ConfigError(f"{where}: 'seed' is set by the study from seeds:; remove it from the "
                          "recipe")
    train = values.get("train")
    if isinstance(train, Mapping):
        placed = sorted(set(train) & set(PLACED_TRAIN_FIELDS))
        if placed:
            raise ConfigError(f"{where}: train: {', '.join(placed)} "
                              f"{'is' if len(placed) == 1 else 'are'} set by the study (the seed "
                              "from seeds:, the folders from --out); remove it from the recipe")
    return {**values, "seed": seed}


def check_train_section(train: Any, what: str, fixed: tuple[str, ...] = ()) -> dict[str, Any]:
    """``train`` (TrainConfig fields for the cell's runs) checked now, so a typo or a bad value
    fails when the study is planned, not hours into it; ``fixed``: fields the kind sets
    itself."""
    if not isinstance(train, Mapping):
        raise ConfigError(f"{what}: train must be a mapping of TrainConfig fields, got "
                          f"{type(train).__name__}")
    bad = sorted(set(train) & set(fixed))
    if bad:
        raise ConfigError(f"{what}: train may not set {', '.join(bad)}: the cell sets "
                          f"{'it' if len(bad) == 1 else 'them'} itself")
    TrainConfig.from_dict(dict(train), source=f"{what} train")
    return dict(train)


def continue_section(meta: Mapping[str, Any], overrides: Mapping[str, Any],
                     seed: int) -> dict[str, Any]:
    """TrainConfig fields of a run that continues a source model: what it was trained on and
    with (``fine_tune_train_section``: data, subset, batch, optimizer; cosine, no warm-up),
    the cell's ``seed`` for the run's own randomness while the subset stays the source's, then
    the cell's ``overrides``."""
    out = fine_tune_train_section(meta)
    saved = meta.get("config") or {}
    if "seed" in saved or "subset_seed" in saved:
        out["subset_seed"] = data_seed_of(dict(saved))
    out["seed"] = seed
    out.update(overrides)
    return out


def train_config(values: Mapping[str, Any], ctx: CellContext, what: str) -> TrainConfig:
    """The TrainConfig of ``values``, quiet unless the study shows progress, under the study's
    pinned speed settings (``pin_speed``)."""
    cfg = pin_speed(TrainConfig.from_dict(dict(values), source=what), ctx)
    return cfg if ctx.progress else cfg.replace(progress=False)


def data_for(cfg: TrainConfig, ctx: CellContext):
    """(train, test) ImageTensors of ``cfg``, decoded once per process (``cell_data``)."""
    return cell_data(cfg, ctx)


def protocol_for(meta: Mapping[str, Any], flip: bool | None = None) -> EvalProtocol:
    """How these kinds score a model: fp32, flip-averaged as the source was trained (or as
    ``flip`` says), as ``squeezelab eval`` scores it."""
    return EvalProtocol.for_model(meta, flip=flip)


def score(model, test, protocol: EvalProtocol) -> dict[str, Any]:
    """Top-1, top-5 (fractions), loss and the protocol of ``model`` on ImageTensors ``test``."""
    return evaluate_top1(model, test, protocol)


def source_score(checkpoint: Path, model, test, protocol: EvalProtocol,
                 ctx: CellContext) -> dict[str, Any]:
    """``score`` of the unchanged source model ``checkpoint`` holds, once per process for the
    cells that start from the same file under the same protocol and test images: a grid's
    cells mostly do (the quantization study's 32 cells, one model), and each pass over 10,000
    test images is a minute of a cell on one core. Keyed by the file (path, size, mtime), the
    protocol and the test data object itself (``cell_data`` keeps one per process)."""
    stat = checkpoint_paths(checkpoint)[1].stat()
    key = (str(Path(checkpoint).resolve()), stat.st_size, stat.st_mtime_ns,
           repr(sorted(protocol.to_dict().items())))
    cached = ctx.cache.get("source_score")
    if cached is not None and cached[0] == key and cached[1] is test:
        return dict(cached[2])
    result = score(model, test, protocol)
    ctx.cache["source_score"] = (key, test, result)  # the latest only, as cell_data keeps
    return dict(result)


#: test images ``check_reproduces`` runs through both models
REPRODUCE_IMAGES = 256


def check_reproduces(model, loaded, test, protocol: EvalProtocol, path: Path) -> None:
    """Raise RuntimeError unless the model loaded back from ``path`` gives exactly the logits
    of the ``model`` that was written, on the first ``REPRODUCE_IMAGES`` test images under
    ``protocol``: the file is then the model, so scoring the loaded one scores both (where
    scoring each on the whole test set and comparing top-1 cost a second pass, and passed
    files whose logits differed)."""
    n = min(REPRODUCE_IMAGES, len(test))
    subset = test.subset(range(n)) if n < len(test) else test
    ours, theirs = (data_logits(m, subset, protocol) for m in (model, loaded))
    if not torch.equal(ours, theirs):
        worst = float((ours - theirs).abs().max())
        raise RuntimeError(f"{path}: the model loaded back from the file gives other logits "
                           f"than the model that was written (largest difference {worst:.3g} "
                           f"over {n} test images); the file does not reproduce the model")


def fresh_or_resume(run_dir: Path, resumable: bool = True) -> bool:
    """Get ``run_dir`` ready for a ``train()`` run: True when it holds an interrupted run to
    resume (a last checkpoint; only when ``resumable``); otherwise what an earlier, unrecorded
    attempt left there is removed (the study records a cell only when it ends), so the run
    starts afresh."""
    run = RunDir(run_dir)
    if resumable and run.status == "unfinished" and run.last.with_name("last.json").is_file():
        return True
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return False


def resumed_config(cfg: TrainConfig, run_dir: Path) -> TrainConfig:
    """``cfg`` with the speed settings the interrupted run in ``run_dir`` chose (its autotune's
    choice is part of the run: the resumed part must use the same)."""
    saved = read_run_config(run_dir)
    return cfg.replace(precision=saved.get("precision", cfg.precision),
                       channels_last=saved.get("channels_last", cfg.channels_last))


def check_finished(*runs: Path, cell: str) -> None:
    """Raise CellInterrupted when a Ctrl-C stopped one of the training runs a workflow made
    (``train()`` then returns and the workflow goes on with a half-trained model): the cell is
    not recorded, and the next run of the study does it again."""
    from squeezelab.workflows.studies.registry import CellInterrupted

    stopped = [str(r) for r in runs if RunDir(r).status == "unfinished"]
    if stopped:
        raise CellInterrupted(f"cell {cell}: a Ctrl-C stopped its run in {', '.join(stopped)}; "
                              "the next run of the study starts the cell again")


def file_size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


__all__ = ["MODEL_STEM", "check_finished", "check_source", "check_train_section",
           "continue_section", "data_for", "fresh_or_resume", "load_source", "place_seed",
           "protocol_for", "recorded_top1", "resumed_config", "score", "source_checkpoint",
           "source_exists", "source_score", "check_reproduces", "REPRODUCE_IMAGES",
           "train_config"]
