"""CIFAR-10 and CIFAR-100 read from the official python archives (Krizhevsky 2009, "Learning
Multiple Layers of Features from Tiny Images"; https://www.cs.toronto.edu/~kriz/cifar.html).

``cifar-10-python.tar.gz`` holds ``cifar-10-batches-py/data_batch_1..5``, ``test_batch`` and
``batches.meta``; ``cifar-100-python.tar.gz`` holds ``cifar-100-python/train``, ``test`` and
``meta`` (we use the 100 fine labels). Each entry is a python pickle of a dict with bytes keys:
``b"data"`` is a uint8 array (N, 3072) holding the 1024 red, then green, then blue values of each
32x32 image in row-major order, so it reshapes to (N, 3, 32, 32) directly.

A pickle can run arbitrary code when loaded, so the entries are read with
:class:`RestrictedUnpickler`, which admits only numpy's array reconstruction functions,
``ndarray`` and ``dtype``; any other global is refused. The archive members are read in memory
(never extracted to disk), and the archive is checked against its published MD5.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from squeezelab.data.types import DOWNLOAD_HINT, DataError, ImageTensors
from squeezelab.fileio import make_temp_beside

CIFAR_SIDE_PX = 32
CIFAR_PIXELS_PER_IMAGE = 3 * CIFAR_SIDE_PX * CIFAR_SIDE_PX  # 3072 bytes per image row


@dataclass(frozen=True)
class CifarSpec:
    """Where one CIFAR variant lives and how its archive is laid out."""

    name: str  # "CIFAR-10"
    url: str
    filename: str  # archive file name
    md5: str  # published MD5 of the archive
    folder: str  # top-level folder inside the archive
    train_members: tuple[str, ...]
    test_members: tuple[str, ...]
    meta_member: str
    label_key: bytes  # key of the labels list in a batch dict
    names_key: bytes  # key of the class-name list in the meta dict
    num_classes: int
    # Per-channel statistics of the train split in 0..1 units (computed over the 50,000 official
    # train images; the population std, not the often-copied (0.2023, 0.1994, 0.2010)).
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR_SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        name="CIFAR-10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        filename="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_members=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_members=("test_batch",),
        meta_member="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarSpec(
        name="CIFAR-100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        filename="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_members=("train",),
        test_members=("test",),
        meta_member="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}

# The only globals a CIFAR pickle may name: numpy's array/scalar reconstruction helpers (under
# their numpy 1.x and 2.x module names) and the ndarray / dtype types. None of them can run code.
_ALLOWED_GLOBALS = frozenset(
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | frozenset(
    (module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")
) | frozenset({("numpy", "ndarray"), ("numpy", "dtype")})


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR archive entries: plain containers and numpy arrays only."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise DataError(
            f"refusing to unpickle global '{module}.{name}': a CIFAR archive entry may hold only "
            "dicts, lists, bytes, numbers and numpy arrays"
        )


def restricted_loads(data: bytes, what: str = "pickle") -> Any:
    """Unpickle ``data`` (a CIFAR archive entry) admitting only numpy arrays and plain values.

    ``encoding="bytes"`` reads the official files, written by Python 2, with bytes dict keys.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None
    except Exception as exc:  # any malformed pickle: truncated, bad opcode, bad numpy state
        raise DataError(
            f"{what}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from None


def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in 1 MiB blocks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _spec(name: str) -> CifarSpec:
    if name not in CIFAR_SPECS:
        raise DataError(f"unknown CIFAR variant {name!r}; expected one of {sorted(CIFAR_SPECS)}")
    return CIFAR_SPECS[name]


def ensure_archive(name: str, root: str | os.PathLike, *, download: bool = False) -> Path:
    """Path of the verified official archive of ``name`` ("cifar10" / "cifar100") under ``root``.

    Downloads it from the official URL when missing and ``download`` is true. Raises
    :class:`DataError` naming the file and the exact path to place it when it is missing and cannot
    be downloaded, and when its MD5 differs from the published one.
    """
    spec = _spec(name)
    path = Path(root).expanduser().absolute() / spec.filename
    place = (f"download {spec.url} (MD5 {spec.md5}) and place it at {path}")
    if not path.is_file():
        if not download:
            raise DataError(f"{spec.name} archive {spec.filename} not found: {place}, "
                            f"or let squeezelab fetch it: {DOWNLOAD_HINT}")
        _download(spec, path, place)
    got = file_md5(path)
    if got != spec.md5:
        raise DataError(f"{spec.name} archive {path} has MD5 {got}, expected {spec.md5}: the file "
                        f"is damaged or not the official archive; delete it and {place}")
    return path


def _download(spec: CifarSpec, path: Path, place: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp_beside(path, ".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=60) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
        got = file_md5(tmp)
        if got != spec.md5:
            raise DataError(f"downloaded {spec.url} has MD5 {got}, expected {spec.md5}; "
                            f"try again, or {place}")
        os.replace(tmp, path)  # only a verified archive ever appears under its final name
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(
            f"could not download {spec.name} ({exc}); without internet, {place}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_cifar_archive(path: str | os.PathLike, name: str, split: str) -> ImageTensors:
    """Decode ``split`` ("train" / "test") of the archive at ``path`` without checking its MD5.

    Validates every entry: a dict with ``b"data"`` uint8 (N, 3072) and N labels in range, and
    a meta entry with one name per class. Use :func:`load_cifar` for the checked entry point.
    """
    spec = _spec(name)
    if split not in ("train", "test"):
        raise DataError(f"CIFAR split must be 'train' or 'test', got {split!r}")
    members = spec.train_members if split == "train" else spec.test_members
    try:
        tar = tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{path}: not a readable .tar.gz archive ({exc})") from None
    with tar:
        meta = _read_member(tar, path, f"{spec.folder}/{spec.meta_member}")
        classes = _class_names(meta, spec, f"{path}:{spec.meta_member}")
        images, labels = [], []
        for member in members:
            where = f"{path}:{spec.folder}/{member}"
            batch_images, batch_labels = _batch_arrays(
                _read_member(tar, path, f"{spec.folder}/{member}"), spec, where)
            images.append(batch_images)
            labels.append(batch_labels)
    images_np = np.concatenate(images).reshape(-1, 3, CIFAR_SIDE_PX, CIFAR_SIDE_PX)
    return ImageTensors(
        images=torch.from_numpy(np.ascontiguousarray(images_np)),
        labels=torch.from_numpy(np.concatenate(labels)),
        classes=classes,
        source=name,
        mean=spec.mean,
        std=spec.std,
    )


def load_cifar(name: str, split: str = "train", *, root: str | os.PathLike,
               download: bool = False) -> ImageTensors:
    """CIFAR-10 / CIFAR-100 ``split`` from the MD5-verified official archive under ``root``."""
    return read_cifar_archive(ensure_archive(name, root, download=download), name, split)


def _read_member(tar: tarfile.TarFile, path: str | os.PathLike, member: str) -> Any:
    try:
        info = tar.getmember(member)
    except KeyError:
        raise DataError(f"{path}: archive has no entry {member!r}") from None
    f = tar.extractfile(info) if info.isfile() else None
    if f is None:
        raise DataError(f"{path}: entry {member!r} is not a regular file")
    try:
        data = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: entry {member!r} cannot be read ({exc})") from None
    return restricted_loads(data, f"{path}:{member}")


def _class_names(meta: Any, spec: CifarSpec, where: str) -> list[str]:
    if not isinstance(meta, dict) or spec.names_key not in meta:
        raise DataError(f"{where}: expected a dict with key {spec.names_key!r}")
    names = meta[spec.names_key]
    if not isinstance(names, (list, tuple)) or len(names) != spec.num_classes:
        raise DataError(f"{where}: expected {spec.num_classes} class names under "
                        f"{spec.names_key!r}, "
                        f"got {len(names) if hasattr(names, '__len__') else names!r}")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _batch_arrays(batch: Any, spec: CifarSpec, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, dict):
        raise DataError(f"{where}: expected a dict, got {type(batch).__name__}")
    for key in (b"data", spec.label_key):
        if key not in batch:
            raise DataError(f"{where}: missing key {key!r}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != CIFAR_PIXELS_PER_IMAGE:
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise DataError(f"{where}: b'data' must be a uint8 array (N, {CIFAR_PIXELS_PER_IMAGE}), "
                        f"got {got}")
    try:
        labels = np.asarray(batch[spec.label_key])
    except Exception as exc:
        raise DataError(
            f"{where}: labels {spec.label_key!r} are not a list of integers ({exc})") from None
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{where}: labels {spec.label_key!r} must be a list of integers, got "
                        f"{labels.dtype} values of shape {labels.shape}")
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{where}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataError(f"{where}: labels must be in [0, {spec.num_classes - 1}], got values in "
                        f"[{labels.min()}, {labels.max()}]")
    return data, labels.astype(np.int64)
