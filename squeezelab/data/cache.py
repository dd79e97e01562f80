"""A cache of decoded images: decode a class-folder split once, then load it as uint8 tensors.

The airbench recipe (Jordan 2024, arXiv 2404.00498) keeps CIFAR-10 as one uint8 tensor and
never touches the image files in the training loop; this module makes that possible for any
class-folder data set. An entry is two files in the cache folder (``$SQUEEZELAB_CACHE`` or
``~/.cache/squeezelab``, never the source folder):

* ``decoded/<key>.safetensors``: ``images`` uint8 (N, 3, H, W) and ``labels`` int64 (N,);
* ``decoded/<key>.json``: classes, mean/std, skipped files, sizes, and the SHA-256 and byte length
  of the safetensors file.

``key`` hashes the absolute source path, split, image size, every file's path, size and mtime,
and the format version, so any change to the source folder gives a new entry. Both files are
written atomically (temporary file + ``os.replace``), the JSON last; an entry whose length,
checksum or shapes do not match its JSON is reported as corrupt and rebuilt, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from squeezelab.data.folders import SplitFiles
from squeezelab.fileio import atomic_write_bytes

CACHE_FORMAT = "squeezelab-decoded-images"
CACHE_VERSION = 1


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$SQUEEZELAB_CACHE``, else ``~/.cache/squeezelab``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser().absolute()
    env = os.environ.get("SQUEEZELAB_CACHE")
    if env:
        return Path(env).expanduser().absolute()
    return Path.home() / ".cache" / "squeezelab"


def cache_key(files: SplitFiles, size_hw: tuple[int, int] | None) -> str:
    """Hex SHA-256 naming the cache entry of ``files`` decoded at ``size_hw`` (None = native)."""
    digest = hashlib.sha256()
    header = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "root": files.root,
              "split": files.split, "folder": files.folder, "classes": files.classes,
              "image_size": list(size_hw) if size_hw else None, "num_files": len(files.files)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for f in files.files:
        # One line per file; \0 cannot occur in a path, so lines cannot run into each other.
        digest.update(f"{f.path}\0{f.label}\0{f.size_bytes}\0{f.mtime_ns}\n".encode())
    return digest.hexdigest()


def entry_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    """(json, safetensors) paths of the entry ``key``."""
    folder = cache_dir / "decoded"
    return folder / f"{key}.json", folder / f"{key}.safetensors"


def save_entry(cache_dir: Path, key: str, images: torch.Tensor, labels: torch.Tensor,
               meta: dict[str, Any]) -> None:
    """Write the entry ``key``: tensors first, then the JSON that vouches for them."""
    json_path, st_path = entry_paths(cache_dir, key)
    blob = st_save({"images": images.contiguous(), "labels": labels.contiguous()})
    record = dict(meta, format=CACHE_FORMAT, version=CACHE_VERSION, key=key,
                  num_images=int(images.shape[0]), image_shape=list(images.shape[1:]),
                  safetensors_bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    atomic_write_bytes(st_path, blob)
    atomic_write_bytes(json_path, json.dumps(record, indent=1).encode())


def read_meta(cache_dir: Path, key: str) -> dict[str, Any] | None:
    """The JSON record of entry ``key``, or ``None`` when it is missing or not a valid record."""
    json_path, _ = entry_paths(cache_dir, key)
    try:
        record = json.loads(json_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        warnings.warn(f"decoded-image cache {json_path} is unreadable ({exc}); rebuilding it",
                      stacklevel=3)
        return None
    if not isinstance(record, dict) or record.get("format") != CACHE_FORMAT \
            or record.get("version") != CACHE_VERSION or record.get("key") != key:
        warnings.warn(f"decoded-image cache {json_path} is not a version-{CACHE_VERSION} record "
                      "for this key; rebuilding it", stacklevel=3)
        return None
    return record


def load_entry(cache_dir: Path, key: str) -> tuple[torch.Tensor, torch.Tensor, dict] | None:
    """(images, labels, meta) of entry ``key`` if present and intact, else ``None``.

    Intact means: the safetensors file has the recorded length and SHA-256, and holds uint8
    images of the recorded shape with as many int64 labels. Anything else warns and returns
    ``None`` so the caller rebuilds the entry.
    """
    record = read_meta(cache_dir, key)
    if record is None:
        return None
    _, st_path = entry_paths(cache_dir, key)
    problem = None
    try:
        blob = st_path.read_bytes()
    except OSError as exc:
        blob, problem = b"", f"unreadable ({exc})"
    if problem is None and len(blob) != record.get("safetensors_bytes"):
        problem = f"{len(blob)} bytes, expected {record.get('safetensors_bytes')}"
    elif problem is None and hashlib.sha256(blob).hexdigest() != record.get("sha256"):
        problem = "SHA-256 differs from the recorded one"
    if problem is None:
        try:
            tensors = st_load(blob)
            images, labels = tensors["images"], tensors["labels"]
        except (SafetensorError, KeyError, ValueError) as exc:
            problem = f"not a valid entry ({exc})"
        else:
            expected = [record.get("num_images")] + list(record.get("image_shape", []))
            if images.dtype != torch.uint8 or list(images.shape) != expected \
                    or labels.dtype != torch.int64 or list(labels.shape) != expected[:1]:
                problem = (f"holds images {images.dtype} {list(images.shape)} and labels "
                           f"{labels.dtype} {list(labels.shape)}, expected uint8 {expected}")
    if problem is not None:
        warnings.warn(f"decoded-image cache {st_path} is corrupt: {problem}; rebuilding it",
                      stacklevel=2)
        return None
    return images, labels, record
