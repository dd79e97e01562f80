"""The training loop: one flat loop a reader can check in one screen (nanoGPT's habit).

Pruning masks, DSD phases, distillation, regularisers and perturbed gradients plug in as
``TrainHook``s (squeezelab/hooks.py); the loop itself knows none of them. It also knows nothing of
the device count: under torchrun it wraps the model in DistributedDataParallel, shards the data
by rank and reduces the metrics, with only rank 0 writing files.

Resume is exact: the checkpoint holds the model, optimizer, scheduler, hooks, the global RNG
state and the position inside the epoch; the data order and augmentation depend only on
(seed, epoch), so an interrupted and resumed run ends on the same weights as an uninterrupted
one.
"""
from __future__ import annotations

import itertools
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from squeezelab.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_matching_weights_,
    load_model_state,
    optimizer_from_flat,
    read_weights,
    save_checkpoint,
)
from squeezelab.hooks import TrainHook, TrainState
from squeezelab.models import create_model, get_entry
from squeezelab.train.config import ConfigError, TrainConfig, resume_conflicts
from squeezelab.train.data import load_run_data
from squeezelab.train.distributed import (
    all_reduce_sum,
    broadcast_object,
    init_distributed,
    is_distributed,
)
from squeezelab.train.evaluate import autocast_context, describe_protocol, evaluate
from squeezelab.train.optim import build_optimizer, build_scheduler
from squeezelab.train.run_dir import RunDir, environment


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class _StopRequested(Exception):
    """Raised inside the loop after a finished step once Ctrl-C was pressed; ``sums``: the
    running sums of the epoch so far when it stops inside one (see ``_train_epoch``)."""

    def __init__(self, epoch: int, batch: int, sums: dict[str, float] | None = None):
        super().__init__(epoch, batch)
        self.epoch, self.batch, self.sums = epoch, batch, sums


class _InterruptFlag:
    requested = False


@contextmanager
def _graceful_interrupt():
    """First Ctrl-C: finish the current step, save, stop. A second one interrupts at once."""
    flag = _InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class RunResult:
    run_dir: Path
    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    is_main: bool = True  # False on ranks > 0 of a distributed run: they report nothing

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def default_run_name(cfg: TrainConfig) -> str:
    return f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_run_model(cfg: TrainConfig, num_classes: int,
                    initial_weights: tuple[dict[str, torch.Tensor], str] | None = None,
                    announce: bool = True) -> nn.Module:
    """The model ``cfg`` names, for ``num_classes``, started from ``initial_weights`` (what
    ``read_weights(cfg.init_from)`` returned) when given: tensors of another shape, such as a
    classifier for another class count, keep their initialisation and are named."""
    args = dict(cfg.model_args)
    wanted = args.pop("num_classes", num_classes)
    if wanted != num_classes:
        raise ConfigError(f"model_args.num_classes={wanted}, but the data has {num_classes} "
                          "classes")
    model = create_model(cfg.model, num_classes=num_classes, **args)
    if initial_weights is not None:
        state, source = initial_weights
        fresh = load_matching_weights_(model, state, source)
        if announce:
            print(f"initial weights from {source}"
                  + (f"; {', '.join(fresh)} start fresh (shape differs)" if fresh else ""),
                  flush=True)
    return model


def train(
    cfg: TrainConfig,
    hooks: Sequence[TrainHook] = (),
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
    model: nn.Module | None = None,
    data: tuple[Any, Any] | None = None,
) -> RunResult:
    """Train ``cfg.model`` (or the given ``model``) on ``cfg.data``; returns the run's result.

    ``data`` = (train ImageTensors, test ImageTensors) skips loading (tests, multi-phase
    methods). ``resume=True`` continues from ``run_dir/checkpoints/last``: a larger
    ``cfg.epochs`` extends the run, while a change to what it trains on or how it is scored
    (``RUN_IDENTITY_FIELDS``) is refused. Without ``run_dir`` the run goes to
    ``out_dir/run_name``, or beside it (``NAME-2``) when a finished run is there already.
    """
    r = _set_up(cfg, hooks, resume, run_dir, model, data)
    cfg, state, hooks, run = r.cfg, r.state, r.hooks, r.run
    start_epoch, start_batch, carried = _restore(r) if resume else (0, 0, None)
    if r.is_main and cfg.progress:
        _print_summary(r)
    for hook in hooks:
        hook.on_train_start(state)

    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    interrupted = False
    try:
        with _graceful_interrupt() as stop:
            for epoch in range(start_epoch, cfg.epochs):
                first = epoch == start_epoch
                record = _train_epoch(r, criterion, epoch, start_batch if first else 0,
                                      carried if first else None, stop)
                _end_epoch(r, record)
                if stop.requested:
                    raise _StopRequested(epoch + 1, 0)
    except _StopRequested as at:
        # Keep what was done: a checkpoint that --resume continues exactly from this step,
        # with the interrupted epoch's running sums so its metrics line covers all of it.
        interrupted = True
        r.save(run.last, at.epoch, at.batch, r.history[-1] if r.history else {},
               epoch_sums=at.sums)
        if r.is_main:
            print(f"\ninterrupted: saved {run.last} at epoch {at.epoch + 1}, batch {at.batch}; "
                  f"continue with: squeezelab train --resume {run.path}")
    for hook in hooks:
        hook.on_train_end(state)
    if r.is_main and not interrupted:
        run.write_json("summary.json", {
            "run_dir": str(run.path), "model": cfg.model, "epochs": len(r.history),
            "best_test_top1": r.best_top1, "final": r.history[-1] if r.history else {},
            "total_train_seconds": sum(x["seconds"] for x in r.history),
            "parameters": sum(p.numel() for p in state.model.parameters()),
            "skipped_images": len(r.skipped)})
    return RunResult(run_dir=run.path, model=state.model, history=r.history,
                     interrupted=interrupted, is_main=r.is_main)


@dataclass
class _Run:
    """What ``train`` sets up once and its steps share: the config as resolved (model
    defaults, autotuned speed settings), the data and loaders, the model state, the run
    directory and the bookkeeping of the epochs done."""

    cfg: TrainConfig
    hooks: list[TrainHook]
    state: TrainState
    run: RunDir
    train_data: Any
    test_data: Any
    train_loader: Any
    test_loader: Any
    is_main: bool
    speed: dict[str, Any]
    ckpt_meta: dict[str, Any]
    saved_config: dict[str, Any] | None = None  # the resumed run's config, as it was saved
    best_top1: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)
    warned_uniform: bool = False

    @property
    def skipped(self) -> list[str]:
        """Unreadable files left out of the data (skip_bad_images), train then test."""
        return [*getattr(self.train_data, "skipped", []), *getattr(self.test_data, "skipped", [])]

    def save(self, path: Path, epoch: int, batch: int, metrics: dict[str, Any],
             resumable: bool = True, epoch_sums: dict[str, float] | None = None) -> None:
        """``last`` carries optimizer and RNG state to resume; ``best`` is the weights alone
        (plus hook tensors such as masks), so its safetensors file is the fp32 model's size."""
        if not self.is_main:
            return
        state = self.state
        extra = {"rng": {"torch": torch.get_rng_state()}} if resumable else {}
        for hook in self.hooks:
            if tensors := hook.state_tensors():
                extra[f"hook.{hook.name}"] = tensors
        meta = dict(self.ckpt_meta, epoch=epoch, batch=batch, step=state.step, metrics=metrics,
                    best_top1=self.best_top1, scheduler=state.scheduler.state_dict(),
                    hooks={h.name: h.state_dict() for h in self.hooks})
        if epoch_sums:
            meta["epoch_sums"] = epoch_sums
        save_checkpoint(path, state.model, meta=meta,
                        optimizer=state.optimizer if resumable else None, extra_tensors=extra)


def _set_up(cfg: TrainConfig, hooks: Sequence[TrainHook], resume: bool,
            run_dir: str | Path | None, model: nn.Module | None,
            data: tuple[Any, Any] | None) -> _Run:
    """Everything before the first step: hooks, process group, run directory (checked before
    any data is decoded), data, model, speed settings, loaders, optimizer and schedule."""
    from squeezelab.data import BatchLoader
    from squeezelab.data.preprocess import Preprocess
    from squeezelab.train.methods import default_hooks

    hooks = [*default_hooks(cfg, hooks), *hooks]  # e.g. optimizer: pgd -> the PGD hook
    initial_weights = None
    if model is None:
        get_entry(cfg.model)  # an unknown model name fails before any data is decoded
        if cfg.init_from and not resume:  # so does an unreadable weights file
            initial_weights = read_weights(cfg.init_from)
    dist_info, device = init_distributed(cfg.device)
    is_main = dist_info.is_main
    run, cfg, saved_config = _choose_run_dir(cfg, run_dir, resume, is_main)
    torch.manual_seed(cfg.seed)

    train_data, test_data = data if data is not None else load_run_data(cfg, is_main=is_main)
    augment = cfg.augment
    if augment == "auto":
        augment = "cifar" if train_data.images.shape[-1] <= 64 else "imagenet"
    elif augment == "none":
        augment = None  # BatchLoader's spelling of "no augmentation"
    loader_args = dict(seed=cfg.seed, device=device, rank=dist_info.rank,
                       world_size=dist_info.world_size)
    if model is None:
        model = build_run_model(cfg, train_data.num_classes, initial_weights,
                                announce=is_main and cfg.progress)
    model.to(device)
    speed: dict[str, Any] = {}
    if cfg.precision == "auto" or cfg.channels_last is None:
        cfg, speed = _resolve_speed_settings(cfg, model, train_data, augment, loader_args)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    train_loader = BatchLoader(train_data, cfg.batch_size, train=True, augment=augment,
                               channels_last=cfg.channels_last, **loader_args)
    test_loader = BatchLoader(test_data, max(cfg.batch_size, 256), train=False, augment=None,
                              channels_last=cfg.channels_last, **loader_args)
    if len(train_loader) == 0:
        raise ConfigError(f"batch_size {cfg.batch_size} is larger than the {len(train_data)} "
                          "training images (per rank): no full batch to train on")
    forward_model: nn.Module = model
    if is_distributed():
        forward_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        forward_model = torch.compile(forward_model)
    optimizer = build_optimizer(model.parameters(), cfg)
    state = TrainState(model=model, optimizer=optimizer, config=cfg, device=device,
                       steps_per_epoch=len(train_loader), rank=dist_info.rank,
                       world_size=dist_info.world_size,
                       scheduler=build_scheduler(optimizer, cfg, len(train_loader)),
                       forward_model=forward_model)
    state.extras["run_dir"] = run.path  # for hooks that write files (plots) into the run
    # the preprocessing record lets the checkpoint classify raw images on its own (predict)
    ckpt_meta = dict(config=cfg.to_dict(), class_names=list(train_data.classes),
                     **Preprocess.from_data(train_data).to_meta())
    r = _Run(cfg=cfg, hooks=hooks, state=state, run=run, train_data=train_data,
             test_data=test_data, train_loader=train_loader, test_loader=test_loader,
             is_main=is_main, speed=speed, ckpt_meta=ckpt_meta, saved_config=saved_config)
    if r.skipped:
        ckpt_meta["skipped_images"] = len(r.skipped)
    if is_main and not resume:
        run.create()
        _save_config(run, cfg)  # resolved: model defaults and "auto" settings as chosen
        run.write_json("environment.json", {**environment(), "speed_autotune": speed})
    if is_main:
        _record_skipped(r)
    return r


def _choose_run_dir(cfg: TrainConfig, run_dir: str | Path | None, resume: bool,
                    is_main: bool) -> tuple[RunDir, TrainConfig, dict[str, Any] | None]:
    """The run's directory, and its config (with the run name it got); on resume also the
    saved config, after checking that ``cfg`` may continue it. Writes nothing."""
    if resume:
        run = RunDir(run_dir or Path(cfg.out_dir) / (cfg.run_name or default_run_name(cfg)))
        saved = _read_resume_meta(run)["config"]
        cfg = _continue_config(cfg, saved, run)
        return run, cfg, saved
    if run_dir is not None:  # a directory the caller chose: never another one
        run = RunDir(run_dir)
        if run.status == "unfinished":
            raise ConfigError(f"run directory {run.path} already holds an unfinished run: "
                              f"continue it with --resume {run.path}, or choose another "
                              "directory")
        if run.status == "finished":
            raise ConfigError(f"run directory {run.path} already holds a finished run: choose "
                              f"another directory, or extend it with --resume {run.path} and "
                              "more epochs")
        return run, cfg, None
    run = RunDir(Path(cfg.out_dir) / (cfg.run_name or default_run_name(cfg)))
    # rank 0 decides and every rank follows (an error too, so that no rank waits alone)
    decision: tuple[str, str | None] = (str(run.path), None)
    if is_main and run.status == "unfinished":
        decision = (str(run.path), f"{run.path} holds an unfinished run (interrupted, or "
                    f"still running): continue it with `squeezelab train --resume {run.path}`, "
                    "or start a new run beside it with --run-name NEW_NAME")
    elif is_main and run.status == "finished":
        free = run.next_free()
        print(f"{run.path} holds a finished run, left as it is: this run goes to {free.path}",
              flush=True)
        decision = (str(free.path), None)
    path, error = broadcast_object(decision)
    if error:
        raise ConfigError(error)
    return RunDir(path), cfg.replace(run_name=Path(path).name), None


def _read_resume_meta(run: RunDir) -> dict[str, Any]:
    """The last checkpoint's JSON metadata (read before the tensors, to check flags early)."""
    path = run.last.with_name("last.json")
    if not path.exists():
        raise CheckpointError(f"cannot resume: {run.path} has no checkpoint {run.last}.json "
                              "(was the run started there?)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
        raise CheckpointError(f"{path} is not a training checkpoint's metadata")
    meta.setdefault("config", {})
    return meta


def _continue_config(cfg: TrainConfig, saved: dict[str, Any], run: RunDir) -> TrainConfig:
    """``cfg`` as it may continue the run saved with ``saved``: "auto" speed settings take the
    run's own choice; a change to what the run trains on or is scored on is refused (a best
    score on other images, or scored otherwise, would not compare with the saved one)."""
    if cfg.precision == "auto" and saved.get("precision") not in (None, "auto"):
        cfg = cfg.replace(precision=saved["precision"])
    if cfg.channels_last is None and saved.get("channels_last") is not None:
        cfg = cfg.replace(channels_last=saved["channels_last"])
    for name, was, now in resume_conflicts(saved, cfg):
        flag = "/".join("--" + n.replace("_", "-") for n in name.split("/"))
        raise ConfigError(
            f"cannot resume {run.path} with {name} {now!r}: the run was trained and scored "
            f"with {name} {was!r}, and a resumed run keeps its images, model and scoring (or "
            f"its best score would not compare); drop {flag}, or start a new run from its "
            f"weights with --init-from {run.path} --run-name NEW_NAME")
    return cfg


def _save_config(run: RunDir, cfg: TrainConfig) -> None:
    """config.yaml: every setting of the run as resolved, with a comment naming the ones that
    came from the model's own defaults (so a reader sees why lr is not the built-in 0.1)."""
    import yaml

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    if cfg.defaults_from_model:
        text = (f"# from {cfg.model}'s train defaults (not set by flag or recipe): "
                f"{', '.join(cfg.defaults_from_model)}\n{text}")
    (run.path / "config.yaml").write_text(text)


def _record_skipped(r: _Run) -> None:
    """Unreadable images left out (skip_bad_images): counted on stderr and listed, one path a
    line, in the run's skipped_images.txt, so a run never drops files silently."""
    if not r.skipped:
        return
    r.run.path.mkdir(parents=True, exist_ok=True)
    r.run.write_lines("skipped_images.txt", r.skipped)
    n_train = len(getattr(r.train_data, "skipped", []))
    print(f"skipped {len(r.skipped)} unreadable image(s) ({n_train} train, "
          f"{len(r.skipped) - n_train} test): listed in {r.run.path / 'skipped_images.txt'}",
          file=sys.stderr, flush=True)


def _print_summary(r: _Run) -> None:
    """What the run is about to do, before the first progress bar: data, model, settings (and
    which came from the model's defaults), speed settings and their timings, where it writes."""
    from squeezelab.metrics import count_macs

    cfg, model, data = r.cfg, r.state.model, r.train_data
    height, width = data.image_size
    try:
        macs = f", {count_macs(model, (height, width)) / 1e6:.1f}M MACs per image"
    except (RuntimeError, TypeError, ValueError):  # a wrapper model the counter cannot run
        macs = ""
    params = sum(p.numel() for p in model.parameters())
    skipped = f" ({len(r.skipped)} unreadable skipped)" if r.skipped else ""
    settings = [f"optimizer {cfg.optimizer}", f"lr {cfg.lr:g}",
                f"weight_decay {cfg.weight_decay:g}", f"schedule {cfg.schedule}",
                f"warmup_epochs {cfg.warmup_epochs:g}", f"label_smoothing {cfg.label_smoothing:g}"]
    if cfg.optimizer in ("momentum", "nesterov", "rmsprop"):
        settings.insert(2, f"momentum {cfg.momentum:g}")
    from_model = cfg.defaults_from_model
    provenance = f" ({', '.join(from_model)}: {cfg.model}'s defaults)" if from_model else ""
    timings = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in r.speed.get("timings", {}).items())
    lines = [
        f"data      {data.source}: {len(data):,} train / {len(r.test_data):,} test images, "
        f"{data.num_classes} classes, {height}x{width}{skipped}",
        f"model     {cfg.model}: {params:,} parameters{macs}",
        f"settings  {', '.join(settings)}{provenance}",
        f"speed     {cfg.precision}, {'channels_last' if cfg.channels_last else 'NCHW'} on "
        f"{r.state.device}" + (f" (timed per step: {timings})" if timings else ""),
        f"run       {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} of batch "
        f"{cfg.batch_size} ({len(r.train_loader)} steps each) -> {r.run.path}",
    ]
    tqdm.write("\n".join(lines))


def _resolve_speed_settings(cfg: TrainConfig, model: nn.Module, train_data, augment,
                            loader_args: dict) -> tuple[TrainConfig, dict[str, Any]]:
    """Settle precision="auto" / channels_last=None by timing steps on a real batch."""
    from squeezelab.data import BatchLoader
    from squeezelab.train.autotune import choose_speed_settings

    probe = BatchLoader(train_data, cfg.batch_size, train=True, augment=augment,
                        **loader_args)
    probe.set_epoch(0)
    images, labels = next(iter(probe))
    rng = torch.get_rng_state()  # timing runs dropout: leave the run's RNG stream untouched
    speed = choose_speed_settings(model, images, labels, cfg.precision, cfg.channels_last)
    torch.set_rng_state(rng)
    speed = broadcast_object(speed)  # every rank must use rank 0's choice
    return cfg.replace(precision=speed["precision"], channels_last=speed["channels_last"]), speed


def _train_epoch(r: _Run, criterion: nn.Module, epoch: int, skip: int,
                 carried: dict[str, float] | None, stop: _InterruptFlag) -> dict[str, Any]:
    """One pass over the training batches, skipping the first ``skip`` after a resume;
    ``carried``: the running sums of those skipped batches (saved at the interrupt), so the
    epoch's record covers the whole epoch."""
    state, hooks, loader, forward_model = r.state, r.hooks, r.train_loader, r.state.forward_model
    cfg, model, optimizer, device = state.config, state.model, state.optimizer, state.device
    state.epoch = epoch
    model.train()
    loader.set_epoch(epoch)
    for hook in hooks:
        hook.on_epoch_start(state)
    # running sums stay on the device: no host sync except at log points. The carried sums are
    # global (reduced over ranks when saved): rank 0 alone adds them back.
    carried = carried if carried and state.is_main else None
    loss_sum = torch.tensor((carried or {}).get("loss_sum", 0.0), device=device)
    correct = torch.tensor(int((carried or {}).get("correct", 0)), device=device)
    seen = int((carried or {}).get("seen", 0))
    seconds_before = float((carried or {}).get("seconds", 0.0))
    t0 = time.perf_counter()
    bar = tqdm(total=len(loader), initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not (state.is_main and cfg.progress), leave=False, dynamic_ncols=True)
    for batch_idx, (images, labels) in itertools.islice(enumerate(loader), skip, None):
        with autocast_context(device, cfg.precision):
            logits = forward_model(images)
            loss = criterion(logits.float(), labels)
            for hook in hooks:
                loss = hook.loss(state, images, labels, logits, loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for hook in hooks:
            hook.after_backward(state)
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        state.scheduler.step()
        state.step += 1
        for hook in hooks:
            hook.after_step(state)
        loss_sum += loss.detach().float() * labels.shape[0]
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += labels.shape[0]
        last = batch_idx + 1 == len(loader)
        if (batch_idx + 1) % cfg.log_every == 0 or last or stop.requested:
            mean_loss = loss_sum.item() / max(seen, 1)
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(
                    f"loss became {mean_loss} at epoch {epoch + 1}, step {state.step}; lower "
                    f"the learning rate (lr={cfg.lr}) or use precision=fp32. The last good "
                    "checkpoint is kept in the run's checkpoints/ folder")
            bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{correct.item() / max(seen, 1):.3f}",
                            img_s=f"{seen / (seconds_before + time.perf_counter() - t0):.0f}")
        bar.update(batch_idx + 1 - bar.n)
        if stop.requested and not last:
            bar.close()
            sums = _reduced_sums(loss_sum, correct, seen, device)
            raise _StopRequested(epoch, batch_idx + 1, dict(
                zip(("loss_sum", "correct", "seen"), sums),
                seconds=seconds_before + time.perf_counter() - t0))
    bar.close()
    seconds = seconds_before + time.perf_counter() - t0
    g_loss, g_correct, g_seen = _reduced_sums(loss_sum, correct, seen, device)
    return {
        "epoch": epoch + 1,
        "train_loss": g_loss / max(g_seen, 1),
        "train_top1": g_correct / max(g_seen, 1),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": g_seen / seconds,
        "seconds": seconds,
    }


def _reduced_sums(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int,
                  device: torch.device) -> list[float]:
    """(loss sum, correct, images seen) summed over every rank. The loss sum is reported as
    the float32 value the device accumulated, so carrying it over a resume is exact."""
    totals = all_reduce_sum(torch.stack([
        loss_sum.double(), correct.double(),
        torch.tensor(float(seen), device=device, dtype=torch.float64)]))
    return totals.tolist()


def _end_epoch(r: _Run, record: dict[str, Any]) -> None:
    """Score the epoch when due, hand its record to the hooks, log it, and checkpoint: ``last``
    always, ``best`` when the test top-1 beat every earlier one (all scored alike: a resumed
    run keeps its test images and scoring, see ``_continue_config``)."""
    cfg, epoch = r.cfg, record["epoch"]
    if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
        r.test_loader.set_epoch(0)
        t1 = time.perf_counter()
        result = evaluate(r.state.forward_model, r.test_loader, r.train_data.num_classes,
                          r.state.device, cfg.precision, cfg.test_time_flip)
        record.update(test_loss=result["loss"], test_top1=result["top1"],
                      test_top5=result["top5"],
                      eval_seconds=time.perf_counter() - t1,
                      test_protocol=result["protocol"])  # how top-1 was scored
    for hook in r.hooks:
        hook.on_epoch_end(r.state, record)
    r.history.append(record)
    if r.is_main:
        r.run.append_metrics(record)
        _print_epoch(record, cfg)
        if not r.warned_uniform:
            r.warned_uniform = _warn_if_uniform(record, r.train_data.num_classes)
    improved = record.get("test_top1", -1.0) > r.best_top1
    if improved:
        r.best_top1 = record["test_top1"]
    r.save(r.run.last, epoch, 0, record)
    if improved:
        r.save(r.run.best, epoch, 0, record, resumable=False)


def _restore(r: _Run) -> tuple[int, int, dict[str, float] | None]:
    """Load the run's last checkpoint into ``r.state``; returns (epoch, batch, the running
    sums of the interrupted epoch or None). A larger ``epochs`` than the run was saved with
    extends it: the learning-rate schedule is laid again over the new total."""
    run, state, cfg = r.run, r.state, r.cfg
    ckpt = load_checkpoint(run.last)
    load_model_state(state.model, ckpt, source=str(run.last))
    state.optimizer.load_state_dict(optimizer_from_flat(ckpt.group("optim"),
                                                        ckpt.meta["optimizer"]))
    state.scheduler.load_state_dict(ckpt.meta["scheduler"])
    torch.set_rng_state(ckpt.group("rng")["torch"])
    state.step = ckpt.meta["step"]
    for hook in r.hooks:
        hook.load_state_dict(ckpt.meta.get("hooks", {}).get(hook.name, {}))
        hook.load_state_tensors(ckpt.group(f"hook.{hook.name}"))
    epoch, batch = ckpt.meta["epoch"], ckpt.meta.get("batch", 0)
    r.best_top1 = ckpt.meta.get("best_top1", -1.0)
    if cfg.epochs < epoch + (batch > 0):
        raise ConfigError(f"cannot resume {run.path} with epochs {cfg.epochs}: it has trained "
                          f"{epoch} epoch(s){f' and {batch} batches' if batch else ''} already")
    relaid = _relay_schedule(state, r.saved_config or {})
    if r.is_main:
        run.truncate_metrics(epoch)
        r.history = run.read_metrics() if run.metrics_path.exists() else []
        if cfg.epochs > epoch:
            run.summary_path.unlink(missing_ok=True)  # unfinished again until it ends
        _save_config(run, cfg)  # the run's settings as they now are (e.g. the new epochs)
        print(f"resuming {run.path} at epoch {epoch + 1}, batch {batch}"
              + (f"; {relaid}: the learning-rate schedule is laid again over the new settings "
                 f"from step {state.step} (lr now {state.optimizer.param_groups[0]['lr']:.4g})"
                 if relaid else ""))
    return epoch, batch, ckpt.meta.get("epoch_sums") if batch else None


#: The TrainConfig fields the learning-rate schedule is computed from (train/optim.py).
SCHEDULE_FIELDS = ("epochs", "lr", "schedule", "warmup_epochs", "step_epochs", "gamma",
                   "restart_epochs", "restart_mult")


def _relay_schedule(state: TrainState, saved: dict[str, Any]) -> str:
    """After a resume with other schedule settings than the run was saved with (more epochs,
    another lr): set the learning rates from the new schedule at the current step, as the
    loaded ones are the old schedule's. Returns what changed ("" when nothing did)."""
    cfg, sched = state.config, state.scheduler
    changed = [f"{name} {saved[name]!r} -> {getattr(cfg, name)!r}" for name in SCHEDULE_FIELDS
               if name in saved and saved[name] != getattr(cfg, name)]
    if not changed:
        return ""
    if saved.get("lr") and saved["lr"] != cfg.lr:  # the checkpoint's base rates are the old lr's
        sched.base_lrs = [base * cfg.lr / saved["lr"] for base in sched.base_lrs]
    for group, base, factor in zip(state.optimizer.param_groups, sched.base_lrs,
                                   sched.lr_lambdas):
        group["lr"] = base * factor(sched.last_epoch)
        group["initial_lr"] = base
    sched._last_lr = [group["lr"] for group in state.optimizer.param_groups]
    return ", ".join(changed)


def _warn_if_uniform(r: dict[str, Any], num_classes: int) -> bool:
    """Say so when the test loss sits at ln(num_classes), the loss of a uniform guess: the model
    scores every class alike for every image, and a model in that state rarely leaves it.
    Measured here: the no-BatchNorm course models (ReLU on the logits) reach it within the
    first steps of Adam or RMSprop at lr 1e-3 without warm-up, and stay at exactly ln(10)
    (benchmarks/results/optimizer_study.json: 3 epochs, activation_study.json: 10); one
    warm-up epoch avoids it."""
    if "test_loss" not in r or abs(r["test_loss"] - math.log(num_classes)) > 1e-4:
        return False
    print(f"warning: epoch {r['epoch']}: test loss {r['test_loss']:.4f} = ln({num_classes}), "
          "the loss of a uniform guess: the model gives every class the same score for every "
          "image. A network without BatchNorm whose logits pass a ReLU (the SqueezeNet v1.0 "
          "layout) gets here when its logits die in the first steps, and does not recover; a "
          "learning-rate warm-up (--warmup-epochs 1) or a lower --lr avoids it.",
          file=sys.stderr, flush=True)
    return True


def _print_epoch(r: dict[str, Any], cfg: TrainConfig) -> None:
    if not cfg.progress:
        return
    # the run scores in its own (autotuned) precision: say which, beside the figure
    protocol = f" ({describe_protocol(r['test_protocol'])})" if r.get("test_protocol") else ""
    test = (f" test_top1 {r['test_top1']:.4f} test_top5 {r['test_top5']:.4f}{protocol}"
            if "test_top1" in r else "")
    tqdm.write(f"epoch {r['epoch']:>3}/{cfg.epochs}  train_loss {r['train_loss']:.4f} "
               f"train_top1 {r['train_top1']:.4f}{test}  lr {r['lr']:.4g}  "
               f"{r['images_per_s']:.0f} img/s  {r['seconds']:.1f}s")
