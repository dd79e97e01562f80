"""The training loop: one flat loop a reader can check in one screen (nanoGPT's habit).

Pruning masks, DSD phases, distillation, regularisers and perturbed gradients plug in as
``TrainHook``s (squeezelab/hooks.py); the loop itself knows none of them. It also knows nothing of
the device count: under torchrun it wraps the model in DistributedDataParallel, shards the data
by rank and reduces the metrics, with only rank 0 writing files.

Resume is exact: the checkpoint holds the model, optimizer, scheduler, hooks, the global RNG
state and the position inside the epoch; the data order and augmentation depend only on
(seed, epoch), so an interrupted and resumed run ends on the same weights as an uninterrupted
one. Choosing the run directory and checking a resume's settings are ``train/resume.py``; what
the run prints is ``train/console.py``.
"""
from __future__ import annotations

import itertools
import json
import math
import signal
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
    load_checkpoint,
    load_matching_weights_,
    load_model_state,
    optimizer_from_flat,
    read_weights,
    save_checkpoint,
)
from squeezelab.cputime import cpu_seconds
from squeezelab.hooks import TrainHook, TrainState
from squeezelab.models import create_model, get_entry
from squeezelab.train.config import ConfigError, TrainConfig
from squeezelab.train.console import print_epoch, print_summary, record_skipped, warn_if_uniform
from squeezelab.train.data import load_run_data
from squeezelab.train.distributed import (
    all_reduce_sum,
    broadcast_object,
    init_distributed,
    is_distributed,
    pick_device,
)
from squeezelab.train.evaluate import EvalProtocol, autocast_context, black_pixel, evaluate
from squeezelab.train.fast_start import (
    resize_batch,
    size_for_epoch,
    whiten_stem_,
    whitening_sample,
)
from squeezelab.train.layer_settings import apply_layer_settings_, parameter_groups
from squeezelab.train.optim import build_optimizer, build_scheduler
from squeezelab.train.resume import (
    check_resumed_hooks,
    choose_run_dir,
    relay_schedule,
    save_config,
)
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
        print_summary(r)
    for hook in hooks:
        hook.on_train_start(state)

    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    interrupted = False
    try:
        with _graceful_interrupt() as stop:
            epoch = start_epoch
            while epoch < r.cfg.epochs:  # a time budget may shorten the run after any epoch
                first = epoch == start_epoch
                record = _train_epoch(r, criterion, epoch, start_batch if first else 0,
                                      carried if first else None, stop)
                if r.cfg.time_budget is not None:
                    _fit_time_budget(r, record, epoch)
                _end_epoch(r, record)
                if stop.requested:
                    raise _StopRequested(epoch + 1, 0)
                epoch += 1
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
            # None where epochs were logged before CPU time was recorded (an older run resumed)
            "total_cpu_seconds": sum(x["cpu_seconds"] for x in r.history)
            if all("cpu_seconds" in x for x in r.history) else None,
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
    mixer: Any = None  # BatchMixer where the run mixes its batches (mix:), else None
    best_top1: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)
    warned_uniform: bool = False
    budget: Any = None  # time_budget.BudgetChecks of a run with a time budget, once checked

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
    from squeezelab.data.mixing import BatchMixer
    from squeezelab.data.preprocess import Preprocess
    from squeezelab.train.methods import default_hooks

    hooks = [*default_hooks(cfg, hooks), *hooks]  # e.g. optimizer: pgd -> the PGD hook
    hooks = sorted(hooks, key=lambda h: h.runs_last)  # stable: the rest keep their order
    initial_weights = None
    if model is None:
        get_entry(cfg.model)  # an unknown model name fails before any data is decoded
        if cfg.init_from and not resume:  # so does an unreadable weights file
            initial_weights = read_weights(cfg.init_from)
    dist_info, device = init_distributed(cfg.device)
    is_main = dist_info.is_main
    run, cfg, saved_config = choose_run_dir(cfg, run_dir, resume, is_main)
    torch.manual_seed(cfg.seed)

    train_data, test_data = data if data is not None else load_run_data(cfg, is_main=is_main)
    augment = _augmentation(cfg, train_data)
    loader_args = dict(seed=cfg.seed, device=device, rank=dist_info.rank,
                       world_size=dist_info.world_size)
    if model is None:
        model = build_run_model(cfg, train_data.num_classes, initial_weights,
                                announce=is_main and cfg.progress)
        if cfg.stem_init == "whitening" and initial_weights is None and not resume:
            whiten_stem_(model, whitening_sample(train_data, seed=cfg.seed), cfg.whitening_eps)
    apply_layer_settings_(model, cfg)
    model.to(device)
    speed: dict[str, Any] = {}
    if cfg.precision == "auto" or cfg.channels_last is None:
        cfg, speed = _resolve_speed_settings(cfg, model, train_data, augment, loader_args)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    train_loader = BatchLoader(train_data, cfg.batch_size, train=True, augment=augment,
                               channels_last=cfg.channels_last, cutout=cfg.cutout,
                               crop_padding=cfg.crop_padding,
                               **loader_args)
    mixer = BatchMixer(cfg.mix, train_data.num_classes, cfg.mix_alpha, cfg.mix_prob,
                       seed=cfg.seed, rank=dist_info.rank) if cfg.mix else None
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
    optimizer = build_optimizer(parameter_groups(model, cfg), cfg)
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
             is_main=is_main, speed=speed, ckpt_meta=ckpt_meta, saved_config=saved_config,
             mixer=mixer)
    if r.skipped:
        ckpt_meta["skipped_images"] = len(r.skipped)
    if is_main and not resume:
        run.create()
        save_config(run, cfg)  # resolved: model defaults and "auto" settings as chosen
        run.write_json("environment.json", {**environment(), "speed_autotune": speed})
    if is_main:
        record_skipped(r)
    return r


def _augmentation(cfg: TrainConfig, train_data) -> str | None:
    """BatchLoader's augmentation for ``cfg.augment``: "auto" by the images' size."""
    if cfg.augment == "auto":
        return "cifar" if train_data.images.shape[-1] <= 64 else "imagenet"
    return None if cfg.augment == "none" else cfg.augment


def choose_run_speed(cfg: TrainConfig, data: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """What ``train(cfg)`` would settle ``precision="auto"`` / ``channels_last=None`` to on
    this machine, timed as it times them (the same model, data and first batch), without
    creating a run: for a caller that pins one choice for many runs before any starts
    (``squeezelab study --jobs``). Returns the autotune's ``{"precision", "channels_last",
    "timings"}`` (timings empty where the config leaves nothing to choose)."""
    if cfg.precision != "auto" and cfg.channels_last is not None:
        return {"precision": cfg.precision, "channels_last": cfg.channels_last, "timings": {}}
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_data, _ = data if data is not None else load_run_data(cfg)
    model = build_run_model(cfg, train_data.num_classes, announce=False).to(device)
    loader_args = dict(seed=cfg.seed, device=device, rank=0, world_size=1)
    _, speed = _resolve_speed_settings(cfg, model, train_data, _augmentation(cfg, train_data),
                                       loader_args)
    return speed


def _resolve_speed_settings(cfg: TrainConfig, model: nn.Module, train_data, augment,
                            loader_args: dict) -> tuple[TrainConfig, dict[str, Any]]:
    """Settle precision="auto" / channels_last=None by timing steps on a real batch."""
    from squeezelab.data import BatchLoader
    from squeezelab.train.autotune import choose_speed_settings

    probe = BatchLoader(train_data, cfg.batch_size, train=True, augment=augment,
                        cutout=cfg.cutout, crop_padding=cfg.crop_padding, **loader_args)
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
    # a float: with mixed batches an image counts the share of its target the guess gets
    correct = torch.tensor(float((carried or {}).get("correct", 0.0)), device=device)
    seen = int((carried or {}).get("seen", 0))
    seconds_before = float((carried or {}).get("seconds", 0.0))
    cpu_before = float((carried or {}).get("cpu_seconds", 0.0))
    t0, c0 = time.perf_counter(), cpu_seconds()
    bar = tqdm(total=len(loader), initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not (state.is_main and cfg.progress), leave=False, dynamic_ncols=True)
    size = size_for_epoch(cfg.progressive_sizes, epoch, cfg.epochs)
    mixer = r.mixer if epoch < cfg.epochs - cfg.mix_off_epochs else None
    for batch_idx, (images, labels) in itertools.islice(enumerate(loader), skip, None):
        images = resize_batch(images, size)
        # mixed batches train on class probabilities, which every loss takes as labels
        targets = labels
        if mixer is not None:
            images, targets = mixer(images, labels, epoch, batch_idx)
        with autocast_context(device, cfg.precision):
            logits = forward_model(images)
            loss = criterion(logits.float(), targets)
            for hook in hooks:
                loss = hook.loss(state, images, targets, logits, loss)
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
        guesses = logits.detach().argmax(1)
        correct += (guesses == labels).sum() if mixer is None \
            else targets.gather(1, guesses[:, None]).sum()
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
                seconds=seconds_before + time.perf_counter() - t0,
                cpu_seconds=cpu_before + cpu_seconds() - c0))
    bar.close()
    seconds = seconds_before + time.perf_counter() - t0
    cpu = cpu_before + cpu_seconds() - c0
    g_loss, g_correct, g_seen = _reduced_sums(loss_sum, correct, seen, device)
    return {
        "epoch": epoch + 1,
        "train_loss": g_loss / max(g_seen, 1),
        "train_top1": g_correct / max(g_seen, 1),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": g_seen / seconds,
        "seconds": seconds,
        # this process's CPU time for the epoch's training (its scoring adds to it below):
        # the epoch's cost, however busy the machine was (squeezelab/cputime.py)
        "cpu_seconds": cpu,
    }


def _reduced_sums(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int,
                  device: torch.device) -> list[float]:
    """(loss sum, correct, images seen) summed over every rank. The loss sum is reported as
    the float32 value the device accumulated, so carrying it over a resume is exact."""
    totals = all_reduce_sum(torch.stack([
        loss_sum.double(), correct.double(),
        torch.tensor(float(seen), device=device, dtype=torch.float64)]))
    return totals.tolist()


def _fit_time_budget(r: _Run, record: dict[str, Any], epoch: int) -> None:
    """After each epoch of a run with a time budget: keep the epochs that still fit (the
    recipe's after the first, the plan cut or grown by one after a later one:
    ``train/time_budget.py``), lay the schedule over them, and say so in the config the run
    saves and in ``time_budget.json``."""
    from squeezelab.train.optim import refit_scheduler_
    from squeezelab.train.time_budget import BudgetChecks, budget_warmup, step_seconds_by_size

    first = epoch == 0
    if r.budget is None:
        saved = r.run.path / "time_budget.json"  # a resumed run goes on from its record
        r.budget = (BudgetChecks.from_record(json.loads(saved.read_text()))
                    if not first and saved.is_file() else BudgetChecks())

    def time_sizes() -> dict[int | None, float]:
        # the epochs at other sizes, and the scoring at the images' own, cost what a step at
        # each size costs, timed on a real batch
        images, labels = next(iter(r.train_loader))
        return step_seconds_by_size(r.state.model, images, labels, r.cfg.precision,
                                    bool(r.cfg.channels_last), r.cfg.progressive_sizes)

    fit = r.budget.check(r.cfg, record["seconds"], epoch, r.history, len(r.train_data),
                         len(r.test_data), time_sizes)
    epochs = broadcast_object(fit.epochs)  # every rank stops where rank 0 does
    if not first and epochs == r.cfg.epochs:
        return  # the plan holds: nothing to say
    if epochs != r.cfg.epochs:
        r.cfg = r.cfg.replace(epochs=epochs, warmup_epochs=budget_warmup(r.cfg, epochs))
        r.state.config = r.cfg
        refit_scheduler_(r.state.scheduler, r.cfg, r.state.steps_per_epoch)
        r.ckpt_meta["config"] = r.cfg.to_dict()
    if r.is_main:
        if epochs != fit.asked:
            save_config(r.run, r.cfg)  # a resume continues the epochs planned
        r.budget.fits.append(fit.to_dict())
        r.run.write_json("time_budget.json", r.budget.record(epochs))
        if r.cfg.progress:
            print(fit.describe(), flush=True)


def _end_epoch(r: _Run, record: dict[str, Any]) -> None:
    """Score the epoch when due, hand its record to the hooks, log it, and checkpoint: ``last``
    always, ``best`` when the test top-1 beat every earlier one (all scored alike: a resumed
    run keeps its test images and scoring, see ``train/resume.py``)."""
    cfg, epoch = r.cfg, record["epoch"]
    if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
        r.test_loader.set_epoch(0)
        t1, c1 = time.perf_counter(), cpu_seconds()
        with _evaluation_weights(r):
            result = evaluate(r.state.forward_model, r.test_loader, r.train_data.num_classes,
                              r.state.device, protocol=EvalProtocol(
                                  cfg.precision, cfg.test_time_flip,
                                  translate=cfg.test_time_translate),
                              pad_value=black_pixel(r.test_data.mean, r.test_data.std))
        record.update(test_loss=result["loss"], test_top1=result["top1"],
                      test_top5=result["top5"],
                      eval_seconds=time.perf_counter() - t1,
                      cpu_seconds=record["cpu_seconds"] + cpu_seconds() - c1,
                      test_protocol=result["protocol"])  # how top-1 was scored
    for hook in r.hooks:
        hook.on_epoch_end(r.state, record)
    r.history.append(record)
    if r.is_main:
        r.run.append_metrics(record)
        print_epoch(record, cfg, r.history)
        if not r.warned_uniform:
            r.warned_uniform = warn_if_uniform(record, r.train_data.num_classes)
    improved = record.get("test_top1", -1.0) > r.best_top1
    if improved:
        r.best_top1 = record["test_top1"]
    r.save(r.run.last, epoch, 0, record)
    if improved:
        with _evaluation_weights(r):  # best holds the weights that scored it
            r.save(r.run.best, epoch, 0, record, resumable=False)


@contextmanager
def _evaluation_weights(r: _Run):
    """The hooks' evaluation weights (e.g. a weight average) in the model, for the block."""
    for hook in r.hooks:
        hook.before_evaluate(r.state)
    try:
        yield
    finally:
        for hook in reversed(r.hooks):
            hook.after_evaluate(r.state)


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
    check_resumed_hooks(ckpt.meta.get("hooks") or {}, ckpt.tensors, (h.name for h in r.hooks),
                        run)
    for hook in r.hooks:
        hook.load_state_dict(ckpt.meta.get("hooks", {}).get(hook.name, {}))
        hook.load_state_tensors(ckpt.group(f"hook.{hook.name}"))
    epoch, batch = ckpt.meta["epoch"], ckpt.meta.get("batch", 0)
    r.best_top1 = ckpt.meta.get("best_top1", -1.0)
    if cfg.epochs < epoch + (batch > 0):
        raise ConfigError(f"cannot resume {run.path} with epochs {cfg.epochs}: it has trained "
                          f"{epoch} epoch(s){f' and {batch} batches' if batch else ''} already")
    relaid = relay_schedule(state, r.saved_config or {})
    if r.is_main:
        run.truncate_metrics(epoch)
        r.history = run.read_metrics() if run.metrics_path.exists() else []
        if cfg.epochs > epoch:
            run.summary_path.unlink(missing_ok=True)  # unfinished again until it ends
        save_config(run, cfg)  # the run's settings as they now are (e.g. the new epochs)
        print(f"resuming {run.path} at epoch {epoch + 1}, batch {batch}"
              + (f"; {relaid}: the learning-rate schedule is laid again over the new settings "
                 f"from step {state.step} (lr now {state.optimizer.param_groups[0]['lr']:.4g})"
                 if relaid else ""))
    return epoch, batch, ckpt.meta.get("epoch_sums") if batch else None


