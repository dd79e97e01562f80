"""What a training run prints: the summary before the first step, one line per epoch, the
unreadable images it left out, and the warning when a model has stopped learning; and
``print_line``, the default ``log`` of the workflows built on training."""
from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from squeezelab.train.config import TrainConfig
from squeezelab.train.evaluate import describe_protocol
from squeezelab.train.fast_start import size_for_epoch

if TYPE_CHECKING:  # the loop's bookkeeping, read here; the loop imports this module
    from squeezelab.train.loop import _Run


def print_line(msg: str) -> None:
    """One line on stdout, flushed at once so that it keeps its place among tqdm's bars (on
    stderr) when both go to one log file: the workflows' default ``log``."""
    print(msg, flush=True)


def record_skipped(r: _Run) -> None:
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


def print_summary(r: _Run) -> None:
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
        *([f"methods   {', '.join(h.describe() for h in r.hooks)}"] if r.hooks else []),
        f"speed     {cfg.precision}, {'channels_last' if cfg.channels_last else 'NCHW'} on "
        f"{r.state.device}" + (f" (timed per step: {timings})" if timings else ""),
        f"run       {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} of batch "
        f"{cfg.batch_size} ({len(r.train_loader)} steps each) -> {r.run.path}",
    ]
    tqdm.write("\n".join(lines))


def warn_if_uniform(r: dict[str, Any], num_classes: int) -> bool:
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


def seconds_left(history: Sequence[Mapping[str, Any]], cfg: TrainConfig) -> float | None:
    """How long the epochs still to run should take, from the ones run so far (``history``,
    the last one included): the median of the last ten epochs' training time for each epoch
    left, plus the mean scoring time of the scored ones for each scoring left. None before
    the first epoch. The median, so that an epoch slowed by other work on the machine (or the
    first one, which warms up) does not move the estimate much. Under progressive resizing
    the times are per pixel of each epoch's image size, so the small first epochs do not
    promise that the large last ones will be as quick (pixels still undercount a large
    size's cost a little: smaller images fit the caches better, ``train/time_budget.py``)."""
    if not history:
        return None
    done = int(history[-1]["epoch"])

    def pixels(epoch: int) -> float:  # 1-based epoch's share of work, by its image size
        size = size_for_epoch(cfg.progressive_sizes, epoch - 1, cfg.epochs)
        return 1.0 if size is None else float(size * size)

    per_pixel = statistics.median(float(x["seconds"]) / pixels(int(x["epoch"]))
                                  for x in history[-10:])
    train = per_pixel * sum(pixels(e) for e in range(done + 1, cfg.epochs + 1))
    scored = [float(x["eval_seconds"]) for x in history if "eval_seconds" in x]
    scorings = sum(1 for e in range(done + 1, cfg.epochs + 1)
                   if e % cfg.eval_every == 0 or e == cfg.epochs)
    scoring = sum(scored) / len(scored) if scored else 0.0
    return train + scorings * scoring


def format_duration(seconds: float) -> str:
    """``4h58m``, ``12m``, ``<1m``: a run's time left, to the minute."""
    minutes = int(round(seconds / 60))
    if minutes < 1:
        return "<1m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def print_epoch(r: dict[str, Any], cfg: TrainConfig,
                history: Sequence[Mapping[str, Any]] = ()) -> None:
    """The epoch's line: losses, top-1, learning rate, speed, and, while epochs are left, how
    long they should take (``seconds_left`` over ``history``, this epoch included)."""
    if not cfg.progress:
        return
    # the run scores in its own (autotuned) precision: say which, beside the figure
    protocol = f" ({describe_protocol(r['test_protocol'])})" if r.get("test_protocol") else ""
    test = (f" test_top1 {r['test_top1']:.4f} test_top5 {r['test_top5']:.4f}{protocol}"
            if "test_top1" in r else "")
    left = seconds_left(history, cfg) if r["epoch"] < cfg.epochs else None
    eta = f"  ~{format_duration(left)} left" if left is not None else ""
    tqdm.write(f"epoch {r['epoch']:>3}/{cfg.epochs}  train_loss {r['train_loss']:.4f} "
               f"train_top1 {r['train_top1']:.4f}{test}  lr {r['lr']:.4g}  "
               f"{r['images_per_s']:.0f} img/s  {r['seconds']:.1f}s{eta}")
