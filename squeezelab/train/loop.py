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
import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

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
from squeezelab.train.config import ConfigError, TrainConfig
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
    """Raised inside the loop after a finished step once Ctrl-C was pressed."""

    def __init__(self, epoch: int, batch: int):
        super().__init__(epoch, batch)
        self.epoch, self.batch = epoch, batch


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
    methods). ``resume=True`` continues from ``run_dir/checkpoints/last``.
    """
    from squeezelab.data import BatchLoader
    from squeezelab.train.methods import default_hooks

    hooks = [*default_hooks(cfg, hooks), *hooks]  # e.g. optimizer: pgd -> the PGD hook
    initial_weights = None
    if model is None:
        get_entry(cfg.model)  # an unknown model name fails before any data is decoded
        if cfg.init_from and not resume:  # so does an unreadable weights file
            initial_weights = read_weights(cfg.init_from)
    dist_info, device = init_distributed(cfg.device)
    is_main = dist_info.is_main
    torch.manual_seed(cfg.seed)

    # --- data ------------------------------------------------------------------------------
    train_data, test_data = data if data is not None else load_run_data(cfg, is_main=is_main)
    augment = cfg.augment
    if augment == "auto":
        augment = "cifar" if train_data.images.shape[-1] <= 64 else "imagenet"
    elif augment == "none":
        augment = None  # BatchLoader's spelling of "no augmentation"
    loader_args = dict(seed=cfg.seed, device=device, rank=dist_info.rank,
                       world_size=dist_info.world_size)

    # --- model ----------------------------------------------------------------------------
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
    scheduler = build_scheduler(optimizer, cfg, len(train_loader))
    state = TrainState(model=model, optimizer=optimizer, config=cfg, device=device,
                       steps_per_epoch=len(train_loader), rank=dist_info.rank,
                       world_size=dist_info.world_size, scheduler=scheduler,
                       forward_model=forward_model)

    # --- run directory and resume -----------------------------------------------------------
    run = RunDir(run_dir or Path(cfg.out_dir) / (cfg.run_name or default_run_name(cfg)))
    state.extras["run_dir"] = run.path  # for hooks that write files (plots) into the run
    start_epoch, start_batch, best_top1 = 0, 0, -1.0
    if resume:
        start_epoch, start_batch, best_top1 = _restore(run, state, hooks)
    elif is_main:
        if run.metrics_path.exists() or run.last.with_name("last.json").exists():
            raise ConfigError(f"run directory {run.path} already holds a run: continue it with "
                              f"--resume {run.path}, or choose another --run-name")
        run.create()
        cfg.save_yaml(run.path / "config.yaml")  # resolved: "auto" settings as chosen
        run.write_json("environment.json", {**environment(), "speed_autotune": speed})
    for hook in hooks:
        hook.on_train_start(state)

    history = run.read_metrics() if resume and run.metrics_path.exists() else []
    # the preprocessing record lets the checkpoint classify raw images on its own (predict)
    from squeezelab.data.preprocess import Preprocess

    ckpt_meta = dict(config=cfg.to_dict(), class_names=list(train_data.classes),
                     **Preprocess.from_data(train_data).to_meta())

    def save(path: Path, epoch: int, batch: int, metrics: dict[str, Any],
             resumable: bool = True) -> None:
        """``last`` carries optimizer and RNG state to resume; ``best`` is the weights alone
        (plus hook tensors such as masks), so its safetensors file is the fp32 model's size."""
        if not is_main:
            return
        extra = {"rng": {"torch": torch.get_rng_state()}} if resumable else {}
        for hook in hooks:
            if tensors := hook.state_tensors():
                extra[f"hook.{hook.name}"] = tensors
        meta = dict(ckpt_meta, epoch=epoch, batch=batch, step=state.step, metrics=metrics,
                    best_top1=best_top1, scheduler=scheduler.state_dict(),
                    hooks={h.name: h.state_dict() for h in hooks})
        save_checkpoint(path, model, meta=meta, optimizer=optimizer if resumable else None,
                        extra_tensors=extra)

    # --- the loop -------------------------------------------------------------------------
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    interrupted = warned_uniform = False
    try:
        with _graceful_interrupt() as stop:
            for epoch in range(start_epoch, cfg.epochs):
                skip = start_batch if epoch == start_epoch else 0
                record = _train_epoch(state, hooks, forward_model, train_loader, criterion,
                                      epoch, skip, stop)
                if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                    test_loader.set_epoch(0)
                    t1 = time.perf_counter()
                    result = evaluate(forward_model, test_loader, train_data.num_classes,
                                      device, cfg.precision, cfg.test_time_flip)
                    record.update(test_loss=result["loss"], test_top1=result["top1"],
                                  test_top5=result["top5"],
                                  eval_seconds=time.perf_counter() - t1,
                                  test_protocol=result["protocol"])  # how top-1 was scored
                for hook in hooks:
                    hook.on_epoch_end(state, record)
                history.append(record)
                if is_main:
                    run.append_metrics(record)
                    _print_epoch(record, cfg)
                    if not warned_uniform:
                        warned_uniform = _warn_if_uniform(record, train_data.num_classes)
                improved = record.get("test_top1", -1.0) > best_top1
                if improved:
                    best_top1 = record["test_top1"]
                save(run.last, epoch + 1, 0, record)
                if improved:
                    save(run.best, epoch + 1, 0, record, resumable=False)
                if stop.requested:
                    raise _StopRequested(epoch + 1, 0)
    except _StopRequested as at:
        # Keep what was done: a checkpoint that --resume continues exactly from this step.
        interrupted = True
        save(run.last, at.epoch, at.batch, history[-1] if history else {})
        if is_main:
            print(f"\ninterrupted: saved {run.last} at epoch {at.epoch + 1}, batch {at.batch}; "
                  f"continue with: squeezelab train --resume {run.path}")
    for hook in hooks:
        hook.on_train_end(state)
    if is_main and not interrupted:
        summary = {"run_dir": str(run.path), "model": cfg.model, "epochs": len(history),
                   "best_test_top1": best_top1, "final": history[-1] if history else {},
                   "total_train_seconds": sum(r["seconds"] for r in history),
                   "parameters": sum(p.numel() for p in model.parameters())}
        run.write_json("summary.json", summary)
    return RunResult(run_dir=run.path, model=model, history=history, interrupted=interrupted,
                     is_main=is_main)


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


def _train_epoch(state: TrainState, hooks: Sequence[TrainHook], forward_model: nn.Module,
                 loader, criterion: nn.Module, epoch: int, skip: int,
                 stop: _InterruptFlag) -> dict[str, Any]:
    """One pass over ``loader`` (skipping the first ``skip`` batches after a resume)."""
    cfg, model, optimizer, device = state.config, state.model, state.optimizer, state.device
    state.epoch = epoch
    model.train()
    loader.set_epoch(epoch)
    for hook in hooks:
        hook.on_epoch_start(state)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
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
        # running sums stay on the device: no host sync except at log points
        loss_sum += loss.detach().float() * labels.shape[0]
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += labels.shape[0]
        last = batch_idx + 1 == len(loader)
        if (batch_idx + 1) % cfg.log_every == 0 or last or stop.requested:
            mean_loss = loss_sum.item() / seen
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(
                    f"loss became {mean_loss} at epoch {epoch + 1}, step {state.step}; lower "
                    f"the learning rate (lr={cfg.lr}) or use precision=fp32. The last good "
                    "checkpoint is kept in the run's checkpoints/ folder")
            bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{correct.item() / seen:.3f}",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}")
        bar.update(batch_idx + 1 - bar.n)
        if stop.requested and not last:
            bar.close()
            raise _StopRequested(epoch, batch_idx + 1)
    bar.close()
    seconds = time.perf_counter() - t0
    totals = all_reduce_sum(torch.stack([
        loss_sum.double(), correct.double(),
        torch.tensor(float(seen), device=device, dtype=torch.float64)]))
    g_loss, g_correct, g_seen = totals.tolist()
    return {
        "epoch": epoch + 1,
        "train_loss": g_loss / max(g_seen, 1),
        "train_top1": g_correct / max(g_seen, 1),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": g_seen / seconds,
        "seconds": seconds,
    }


def _restore(run: RunDir, state: TrainState, hooks: Sequence[TrainHook]) -> tuple[int, int, float]:
    """Load ``run``'s last checkpoint into ``state``; returns (epoch, batch, best top-1)."""
    if not (run.last.with_name("last.json")).exists():
        raise CheckpointError(f"cannot resume: {run.path} has no checkpoint "
                              f"{run.last}.json (was the run started there?)")
    ckpt = load_checkpoint(run.last)
    load_model_state(state.model, ckpt, source=str(run.last))
    state.optimizer.load_state_dict(optimizer_from_flat(ckpt.group("optim"),
                                                        ckpt.meta["optimizer"]))
    state.scheduler.load_state_dict(ckpt.meta["scheduler"])
    torch.set_rng_state(ckpt.group("rng")["torch"])
    state.step = ckpt.meta["step"]
    for hook in hooks:
        hook.load_state_dict(ckpt.meta.get("hooks", {}).get(hook.name, {}))
        hook.load_state_tensors(ckpt.group(f"hook.{hook.name}"))
    epoch, batch = ckpt.meta["epoch"], ckpt.meta.get("batch", 0)
    if state.is_main:
        run.truncate_metrics(epoch)
        print(f"resuming {run.path} at epoch {epoch + 1}, batch {batch}")
    return epoch, batch, ckpt.meta.get("best_top1", -1.0)


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
