"""Class-folder image data sets in the ImageNet layout (Deng et al. 2009; the layout that
torchvision's ImageFolder reads): ``root/train/<class>/*.jpg`` and ``root/test/<class>/...`` (or
``root/val/...``).

Class order is the sorted folder names, the same for every split; train and test must hold the
same class folders. Scanning (:func:`scan_split`) and decoding (:func:`decode_files`) are separate
so that the cache can key on the file list before anything is decoded. Decoding uses PIL in a
small process pool, converts to RGB and resizes to one size; an unreadable file is an error
naming it, or is skipped and listed when ``skip_bad=True`` -- never a silent wrong label.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from squeezelab.data.types import SKIP_BAD_HINT, DataError

SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val"), "val": ("val", "test")}
# Below this many files a process pool costs more (start-up, imports) than it saves.
MIN_FILES_FOR_POOL = 2048
CHUNK_FILES = 256  # files per worker task: big enough to amortise the IPC, small for the bar


@dataclass(frozen=True)
class FileEntry:
    """One image file of a split: absolute path, label, and the stat data the cache keys on."""

    path: str
    label: int
    size_bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class SplitFiles:
    """The scanned file list of one split folder."""

    root: str  # absolute data-set root
    split: str  # "train" / "test" / "val" as asked
    folder: str  # the folder actually read (e.g. root/val for split "test")
    classes: list[str]
    files: list[FileEntry]


def split_folder(root: str | os.PathLike, split: str) -> Path:
    """The folder holding ``split`` under ``root`` ("test" falls back to "val" and vice versa)."""
    root_path = Path(root).expanduser().absolute()
    if not root_path.is_dir():
        raise DataError(f"data root {root_path} does not exist or is not a folder")
    if split not in SPLIT_FOLDERS:
        raise DataError(f"split must be one of {sorted(SPLIT_FOLDERS)}, got {split!r}")
    if not (root_path / "train").is_dir():
        raise DataError(f"{root_path} has no train/ folder: expected the class-folder layout "
                        "root/train/<class>/<image>")
    for name in SPLIT_FOLDERS[split]:
        if (root_path / name).is_dir():
            return root_path / name
    raise DataError(f"{root_path} has no {' or '.join(n + '/' for n in SPLIT_FOLDERS[split])} "
                    f"folder for split {split!r}")


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the class sub-folders of a split folder (hidden folders ignored)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def scan_split(root: str | os.PathLike, split: str = "train") -> SplitFiles:
    """List the image files of ``split`` with their labels, checking the layout.

    Class order = sorted folder names of train/. Raises :class:`DataError` when the root or the
    split folder is missing, a class folder holds no files, or the split's class folders differ
    from train's (naming what is only in each). Hidden files (``.DS_Store``) are ignored; every
    other file in a class folder (searched recursively) counts as an image of that class.
    """
    folder = split_folder(root, split)
    root_path = folder.parent
    classes = class_folders(root_path / "train")
    if not classes:
        raise DataError(f"{root_path / 'train'} has no class folders")
    if folder.name != "train":
        here = class_folders(folder)
        if here != classes:
            only_train = sorted(set(classes) - set(here))
            only_here = sorted(set(here) - set(classes))
            raise DataError(f"class folders differ between {root_path / 'train'} and {folder}: "
                            f"only in train: {only_train}, only in {folder.name}: {only_here}")
    files: list[FileEntry] = []
    empty = []
    for label, name in enumerate(classes):
        entries = list(walk_files(folder / name))
        if not entries:
            empty.append(name)
        files.extend(FileEntry(path, label, st.st_size, st.st_mtime_ns) for path, st in entries)
    if empty:
        raise DataError(f"{folder}: class folders with no images: {empty}")
    return SplitFiles(str(root_path), split, str(folder), classes, files)


def walk_files(folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(path, stat) of the non-hidden files under ``folder``, in sorted order, recursively."""
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from walk_files(Path(entry.path))
        elif entry.is_file():
            yield entry.path, entry.stat()


def parse_image_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``None``, an int (square) or (height, width) -> (height, width) in pixels, or ``None``."""
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2 \
            and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                    for s in image_size):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise DataError(f"image_size must be an int or (height, width), got {image_size!r}")
    if min(size) < 1:
        raise DataError(f"image_size must be positive, got {image_size!r}")
    return size


def decode_image(path: str, size_hw: tuple[int, int] | None) -> np.ndarray:
    """One image file -> uint8 (H, W, 3) RGB, resized (bilinear, whole image) to ``size_hw``.

    Raises ``OSError``/``ValueError`` (from PIL) for a file that is not a readable image.
    """
    with Image.open(path) as img:
        if size_hw is not None and img.format == "JPEG":
            # Let libjpeg decode at a reduced scale (1/2, 1/4, 1/8) no smaller than the target:
            # a large saving for big photos resized to small training sizes.
            img.draft("RGB", (size_hw[1], size_hw[0]))
        img = img.convert("RGB")  # also forces the full decode: truncated files raise here
        if size_hw is not None and img.size != (size_hw[1], size_hw[0]):
            img = img.resize((size_hw[1], size_hw[0]), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


@dataclass
class _ChunkResult:
    positions: list[int]  # positions in the file list of the decoded images
    images: list[np.ndarray]  # uint8 (H, W, 3) each
    bad: list[tuple[int, str]]  # (position, reason)


def _decode_chunk(task: tuple[list[tuple[int, str]], tuple[int, int] | None]) -> _ChunkResult:
    items, size_hw = task
    result = _ChunkResult([], [], [])
    for position, path in items:
        try:
            array = decode_image(path, size_hw)
        except Exception as exc:  # PIL raises many types for bad files; all mean "unreadable"
            result.bad.append((position, f"{type(exc).__name__}: {exc}"))
            continue
        result.positions.append(position)
        result.images.append(array)
    return result


@dataclass
class Decoded:
    """Images decoded from a file list: ``images`` uint8 (N, 3, H, W) and the ``kept`` positions."""

    images: np.ndarray
    kept: np.ndarray  # int64 positions in the input list of the decoded images, ascending
    skipped: list[str]  # paths left out (skip_bad=True), in input order


def decode_files(paths: Sequence[str], image_size: int | Sequence[int] | None = None, *,
                 skip_bad: bool = False, num_workers: int | None = None,
                 progress: bool = True, desc: str = "decoding") -> Decoded:
    """Decode ``paths`` into one uint8 (N, 3, H, W) array.

    ``image_size``: int / (height, width) to resize every image to, or ``None`` to keep the
    native size, which all images must then share. ``num_workers``: decoding processes (default
    2 when there are at least ``MIN_FILES_FOR_POOL`` files, else decode in this process). A file
    that cannot be decoded raises :class:`DataError` naming it, unless ``skip_bad`` (then it is
    left out and listed in ``skipped``).
    """
    size_hw = parse_image_size(image_size)
    n = len(paths)
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1) if n >= MIN_FILES_FOR_POOL else 1
    if num_workers < 1:
        raise DataError(f"num_workers must be >= 1, got {num_workers}")
    tasks = [([(i, paths[i]) for i in range(start, min(start + CHUNK_FILES, n))], size_hw)
             for start in range(0, n, CHUNK_FILES)]
    out: np.ndarray | None = None
    kept = np.zeros(n, dtype=bool)
    first_path = ""
    skipped: list[str] = []
    bar = _progress_bar(n, desc, progress)
    try:
        for chunk in _run_tasks(tasks, num_workers):
            for position, reason in chunk.bad:
                if not skip_bad:
                    raise DataError(f"cannot decode image {paths[position]}: {reason} "
                                    f"(to leave out unreadable files: {SKIP_BAD_HINT})")
                skipped.append(paths[position])
            for position, array in zip(chunk.positions, chunk.images):
                if out is None:
                    out = np.empty((n, 3, array.shape[0], array.shape[1]), dtype=np.uint8)
                    first_path = paths[position]
                elif array.shape[:2] != out.shape[2:]:
                    raise DataError(
                        f"images differ in size: {first_path} is {out.shape[3]}x{out.shape[2]}, "
                        f"{paths[position]} is {array.shape[1]}x{array.shape[0]} (width x height); "
                        "pass image_size to resize them to one size")
                out[position] = array.transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
                kept[position] = True
            if bar is not None:
                bar.update(len(chunk.positions) + len(chunk.bad))
    finally:
        if bar is not None:
            bar.close()
    if out is None:
        raise DataError(f"no image could be decoded out of {n} files"
                        + (f" (first skipped: {skipped[0]})" if skipped else ""))
    positions = np.flatnonzero(kept)
    images = out if positions.size == n else out[positions]
    return Decoded(images=images, kept=positions.astype(np.int64), skipped=skipped)


def _run_tasks(tasks: list, num_workers: int) -> Iterator[_ChunkResult]:
    if num_workers == 1 or len(tasks) <= 1:
        for task in tasks:
            yield _decode_chunk(task)
        return
    # fork is cheap and the workers only use PIL and numpy (no torch threads); elsewhere spawn.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(num_workers) as pool:
        yield from pool.imap(_decode_chunk, tasks)  # ordered, so the result is deterministic


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True)
