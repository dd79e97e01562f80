"""Self-describing checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint ``NAME`` is two files written atomically (temporary file + rename):

* ``NAME.safetensors``: the model's state dict under its clean module paths, plus optional extra
  tensor groups (optimizer state ``optim.*``, pruning masks ``mask.*``, RNG state ``rng.*``);
* ``NAME.json``: format name and version, the model spec (registry name and arguments), the
  epoch, metrics, config, class names, the non-tensor optimizer state, and the SHA-256 of the
  safetensors file, checked on load so a truncated or swapped file is refused.

Nothing is unpickled: a checkpoint from an untrusted source cannot run code.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from squeezelab.data.preprocess import META_KEYS
from squeezelab.fileio import atomic_write_bytes, json_default
from squeezelab.models import create_model, model_spec, unwrap_model

__all__ = ["Checkpoint", "CheckpointError", "atomic_write_bytes", "checkpoint_paths",
           "load_checkpoint", "load_matching_weights_", "load_model_state",
           "model_from_checkpoint", "optimizer_from_flat", "optimizer_to_flat", "read_weights",
           "save_checkpoint", "source_meta"]

FORMAT = "squeezelab-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or does not fit the model it is loaded into."""


@dataclass
class Checkpoint:
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @property
    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """Extra tensors saved under ``prefix`` (e.g. "mask"), with the prefix stripped."""
        p = prefix + "."
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}


#: The tensor group in which a training run's checkpoints keep the moving average of the weights
#: (``train/weight_average.py``'s hook, named "ema", saved as ``hook.<name>`` by the train loop).
#: ``best`` holds the average as its weights too; ``last`` holds the last step's weights.
AVERAGE_GROUP = "hook.ema"


def holds_separate_average(ckpt: Checkpoint) -> bool:
    """True when ``ckpt`` keeps a weight average that differs from its own weights (a run's
    ``last``): scoring its weights is then not scoring what the run scored."""
    average, state = ckpt.group(AVERAGE_GROUP), ckpt.model_state
    return any(k in state and not torch.equal(state[k], v) for k, v in average.items())


def with_weight_average(ckpt: Checkpoint, source: str = "checkpoint") -> Checkpoint:
    """``ckpt`` with the weight average it keeps in place of its weights (BatchNorm statistics
    included; integer buffers stay as saved). Refused when it keeps none."""
    average = ckpt.group(AVERAGE_GROUP)
    if not average:
        raise CheckpointError(f"{source} keeps no weight average: its run trained without "
                              "ema_decay, or another command wrote it; score its own weights")
    tensors = dict(ckpt.tensors)
    tensors.update({f"model.{k}": v for k, v in average.items()})
    return Checkpoint(meta=ckpt.meta, tensors=tensors)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run directory -> its best checkpoint, else its last; any other path unchanged.

    Every command that reads a checkpoint accepts a run directory this way."""
    p = Path(path)
    if p.is_dir():
        best = p / "checkpoints" / "best.json"
        p = best if best.exists() else p / "checkpoints" / "last.json"
    return p


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(json, safetensors) paths for ``path`` given as the stem, the .json or the .safetensors."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".safetensors")


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able rest."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in rest.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def source_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint made from another (pruned, quantized, cut, learned) keeps of its
    source's ``meta``: the config it was trained with, its class names and how its inputs are
    prepared (``META_KEYS``), those of them it has. The workflow adds its own record."""
    return {k: meta[k] for k in ("config", "class_names", *META_KEYS) if k in meta}


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    meta: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Save ``model`` (unwrapped from DDP/compile) and optional state; returns the JSON path.

    ``extra_tensors`` maps a group name ("mask", "rng", ...) to tensors stored as
    ``group.name``; ``meta`` is any JSON-able dict (epoch, metrics, config, class_names, ...).
    """
    model = unwrap_model(model)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    info: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION}
    try:
        info["model"] = model_spec(model)
    except ValueError:
        info["model"] = None
    if optimizer is not None:
        opt_tensors, opt_rest = optimizer_to_flat(optimizer)
        tensors.update({f"optim.{k}": v for k, v in opt_tensors.items()})
        info["optimizer"] = opt_rest
    for group, group_tensors in (extra_tensors or {}).items():
        tensors.update({f"{group}.{k}": v.detach().cpu().contiguous() for k, v in
                        group_tensors.items()})
    info.update(meta or {})
    payload = st_save(tensors)
    info["tensors_sha256"] = hashlib.sha256(payload).hexdigest()
    json_path, st_path = checkpoint_paths(path)
    # Tensors first, JSON last: the JSON names the hash of the tensors it belongs to, so a run
    # interrupted between the two renames leaves a pair that load_checkpoint refuses.
    atomic_write_bytes(st_path, payload)
    atomic_write_bytes(json_path, json.dumps(info, indent=2, default=json_default).encode())
    return json_path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint; raises CheckpointError naming the file on any problem."""
    json_path, st_path = checkpoint_paths(path)
    for p in (json_path, st_path):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file {p} does not exist")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{json_path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not a squeezelab checkpoint (no format {FORMAT!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path} has format version {meta['format_version']}; this squeezelab reads "
            f"up to {FORMAT_VERSION}: upgrade squeezelab"
        )
    payload = st_path.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != meta.get("tensors_sha256"):
        raise CheckpointError(
            f"{st_path} does not match its metadata {json_path.name} (SHA-256 {digest[:12]}..., "
            f"expected {str(meta.get('tensors_sha256'))[:12]}...): the file is damaged or from "
            "another checkpoint"
        )
    try:
        tensors = st_load(payload)
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{st_path} is not a readable safetensors file: {e}") from None
    return Checkpoint(meta=meta, tensors=tensors)


def load_model_state(model: nn.Module, ckpt: Checkpoint, source: str = "checkpoint") -> None:
    """Load ``ckpt``'s weights into ``model`` strictly, with an error that says what differs."""
    model = unwrap_model(model)
    state = ckpt.model_state
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        spec = ckpt.meta.get("model") or {}
        lines = [f"{source} holds weights of model {spec.get('name', '?')!r} "
                 f"{spec.get('kwargs', {})}, which do not fit {type(model).__name__}:"]
        if mismatched:
            lines.append("  shape differs: " + "; ".join(mismatched[:5]))
        if missing:
            lines.append(f"  missing {len(missing)} key(s), e.g. {missing[:3]}")
        if unexpected:
            lines.append(f"  unexpected {len(unexpected)} key(s), e.g. {unexpected[:3]}")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """The model weights in ``path`` and a description of where they came from.

    ``path``: a squeezelab checkpoint or run directory (verified as ``load_checkpoint`` does),
    a plain ``.safetensors`` state dict, or a PyTorch ``.pth``/``.pt`` state dict such as
    torchvision's (read with ``weights_only=True``: never unpickled; a ``state_dict`` or
    ``model`` entry and a DDP ``module.`` prefix are unwrapped).
    """
    p = resolve_checkpoint(path)
    if p.suffix in (".pth", ".pt"):
        if not p.is_file():
            raise CheckpointError(f"weights file {p} does not exist")
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for a bad or hostile file
            raise CheckpointError(f"{p} is not a readable PyTorch state dict "
                                  f"(weights only): {e}") from None
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            raise CheckpointError(f"{p} does not hold a state dict of named tensors")
        return {k.removeprefix("module."): v for k, v in state.items()}, str(p)
    json_path, st_path = checkpoint_paths(p)
    if p.suffix == ".safetensors" and not json_path.is_file():
        if not st_path.is_file():
            raise CheckpointError(f"weights file {st_path} does not exist")
        try:
            return st_load(st_path.read_bytes()), str(st_path)
        except (SafetensorError, ValueError) as e:
            raise CheckpointError(f"{st_path} is not a readable safetensors file: {e}") from None
    return load_checkpoint(p).model_state, str(json_path)


def load_matching_weights_(model: nn.Module, state: dict[str, torch.Tensor],
                           source: str = "weights") -> list[str]:
    """Copy ``state`` into ``model`` for fine-tuning: every name must match, and a tensor whose
    shape differs (a classifier for another number of classes) keeps its initialisation.
    Returns those names; raises ``CheckpointError`` when names differ or nothing fits."""
    model = unwrap_model(model)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        lines = [f"{source} does not hold the weights of this {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing {len(missing)} key(s), e.g. {missing[:3]}")
        if unexpected:
            lines.append(f"  unexpected {len(unexpected)} key(s), e.g. {unexpected[:3]}")
        raise CheckpointError("\n".join(lines))
    skipped = [k for k in own if state[k].shape != own[k].shape]
    if len(skipped) == len(own):
        raise CheckpointError(f"no tensor of {source} has the shape of this model's")
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped


def model_from_checkpoint(
    path: str | os.PathLike, num_classes: int | None = None
) -> tuple[nn.Module, Checkpoint]:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    ckpt = load_checkpoint(path)
    spec = ckpt.meta.get("model")
    if not spec:
        raise CheckpointError(f"{path} does not name the model it holds; cannot rebuild it")
    kwargs = dict(spec["kwargs"])
    saved_classes = kwargs.get("num_classes")
    if num_classes is not None and saved_classes is not None and num_classes != saved_classes:
        raise CheckpointError(
            f"{path} holds a {saved_classes}-class {spec['name']}, but {num_classes} classes "
            "were asked for"
        )
    model = create_model(spec["name"], **kwargs)
    load_model_state(model, ckpt, source=str(path))
    model.eval()
    return model, ckpt
