"""Where a run writes, and whether a run may be continued there.

A new run gets its own directory (a finished one beside it is left alone; an unfinished one is
named, to be resumed); a resumed run must train on the same images, model and scoring as it was
saved with, since its best score would otherwise not compare; a resume that changes the schedule
(more epochs, another lr) lays the learning rate again from the current step.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from squeezelab.checkpoint import CheckpointError
from squeezelab.hooks import TrainState
from squeezelab.train.config import ConfigError, TrainConfig, resume_conflicts
from squeezelab.train.distributed import broadcast_object
from squeezelab.train.run_dir import RunDir


def default_run_name(cfg: TrainConfig) -> str:
    return f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def choose_run_dir(cfg: TrainConfig, run_dir: str | Path | None, resume: bool,
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


def saved_hook_states(run_dir: str | Path) -> dict[str, Any]:
    """The hooks' states in a run's last checkpoint, by hook name (``{}`` if it has none):
    what a command needs to build the same methods again when it resumes the run."""
    hooks = _read_resume_meta(RunDir(run_dir)).get("hooks") or {}
    return hooks if isinstance(hooks, dict) else {}


def check_resumed_hooks(saved: dict[str, Any], saved_tensors: Iterable[str],
                        hook_names: Iterable[str], run: RunDir) -> None:
    """Refuse to resume a run without a method it was trained with (distillation, pruning
    masks, DSD ...), i.e. a hook that kept a state (``saved``: the checkpoint's hook states by
    name; ``saved_tensors``: its tensor names, ``hook.NAME.KEY``) and is not among
    ``hook_names``: the rest of the run would quietly train as something else. A hook that
    kept nothing (a progress printer, a test's interrupter) may be left out."""
    kept = {name for name, state in saved.items() if state}
    kept |= {key.split(".")[1] for key in saved_tensors if key.startswith("hook.")}
    missing = sorted(kept - set(hook_names))
    if missing:
        raise ConfigError(f"cannot resume {run.path} without {', '.join(missing)}: the run was "
                          f"trained with {'these methods' if len(missing) > 1 else 'it'}, and "
                          "resuming without would change what the rest of it trains (resume "
                          "it through the command or workflow that started it)")


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
    saved_scale = saved.get("norm_lr_scale", 1.0)
    if (saved_scale == 1.0) != (cfg.norm_lr_scale == 1.0):
        raise ConfigError(
            f"cannot resume {run.path} with norm_lr_scale {cfg.norm_lr_scale!r}: the run was "
            f"trained with {saved_scale!r}, and its saved optimizer state has "
            f"{'one parameter group' if saved_scale == 1.0 else 'two parameter groups'}; "
            "drop --norm-lr-scale, or start a new run from its weights with --init-from")
    return cfg


def save_config(run: RunDir, cfg: TrainConfig) -> None:
    """config.yaml: every setting of the run as resolved, with a comment naming the ones that
    came from the model's own defaults (so a reader sees why lr is not the built-in 0.1)."""
    import yaml

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    if cfg.defaults_from_model:
        text = (f"# from {cfg.model}'s train defaults (not set by flag or recipe): "
                f"{', '.join(cfg.defaults_from_model)}\n{text}")
    (run.path / "config.yaml").write_text(text)


#: The TrainConfig fields the learning-rate schedule is computed from (train/optim.py).
SCHEDULE_FIELDS = ("epochs", "lr", "schedule", "warmup_epochs", "step_epochs", "gamma",
                   "restart_epochs", "restart_mult")


def relay_schedule(state: TrainState, saved: dict[str, Any]) -> str:
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
