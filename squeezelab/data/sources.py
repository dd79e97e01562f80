"""One entry point for every data source: ``load_split(source, split) -> ImageTensors``.

``source`` is "cifar10" / "cifar100" (the official archives of Krizhevsky 2009, see
:mod:`squeezelab.data.cifar`) or the path of a class-folder root (:mod:`squeezelab.data.folders`),
which is decoded once and then read from the decoded-image cache (:mod:`squeezelab.data.cache`).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from squeezelab.data.cache import (
    cache_key,
    default_cache_dir,
    load_entry,
    read_meta,
    save_entry,
)
from squeezelab.data.cifar import CIFAR_SPECS, load_cifar
from squeezelab.data.folders import decode_files, parse_image_size, scan_split
from squeezelab.data.types import SKIP_BAD_HINT, DataError, ImageTensors

CIFAR10_DIR_ENV = "SQUEEZELAB_CIFAR10_DIR"
SHARED_CIFAR10 = Path("..") / "shared" / "data" / "cifar10-jpeg"
# The project root: squeezelab/data/sources.py -> parents[2].
PROJECT_ROOT = Path(__file__).resolve().parents[2]
STD_FLOOR = 1.0 / 255  # one grey level: keeps normalisation finite on constant-colour data


def resolve_default_cifar10() -> str:
    """The default CIFAR-10 source: the class-folder copy if present, else "cifar10".

    Looks at ``$SQUEEZELAB_CIFAR10_DIR`` (an error if set to a folder that does not exist), then
    ``../shared/data/cifar10-jpeg`` relative to the project root and to the current directory.
    Falls back to "cifar10", the official archive (which ``load_split`` can download).
    """
    env = os.environ.get(CIFAR10_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        if not (path / "train").is_dir():
            raise DataError(f"${CIFAR10_DIR_ENV} is {env!r}, which has no train/ folder; "
                            "point it at a CIFAR-10 class-folder root or unset it")
        return str(path.resolve())
    for base in (PROJECT_ROOT, Path.cwd()):
        candidate = base / SHARED_CIFAR10
        if (candidate / "train").is_dir():
            return str(candidate.resolve())
    return "cifar10"


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, float, float],
                                                  tuple[float, float, float]]:
    """Per-channel mean and (population) std of uint8 (N, 3, H, W) images, in 0..1 units.

    Exact: computed from a 256-bin histogram per channel (no float sum over 10^8 pixels).
    A std below one grey level is raised to ``STD_FLOOR`` so normalising cannot divide by 0.
    """
    if images.numel() == 0:
        raise DataError("cannot compute channel statistics of an empty image set")
    levels = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(3):  # 3 channels: a loop over channels, not pixels
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = float((counts * levels).sum() / total)
        var = float((counts * (levels - mean) ** 2).sum() / total)
        means.append(mean / 255.0)
        stds.append(max(var ** 0.5 / 255.0, STD_FLOOR))
    return tuple(means), tuple(stds)  # type: ignore[return-value]


def load_split(source: str, split: str = "train", *, root: str | os.PathLike | None = None,
               image_size: int | Sequence[int] | None = None,
               cache_dir: str | os.PathLike | None = None, download: bool = False,
               skip_bad: bool = False, limit: int | None = None, seed: int = 0,
               progress: bool = True) -> ImageTensors:
    """Load ``split`` of ``source`` as decoded uint8 tensors.

    ``source``: "cifar10" / "cifar100" (official archive under ``root``, default the cache
    folder; ``download=True`` fetches it) or a class-folder root path. ``image_size``: int or
    (height, width) to resize to; ``None`` keeps the native size. ``cache_dir``: where decoded
    class folders are cached (default ``$SQUEEZELAB_CACHE`` or ``~/.cache/squeezelab``).
    ``skip_bad``: leave out unreadable files (listed in ``skipped``) instead of failing.
    ``limit``: keep ``limit // num_classes`` images of every class, chosen under ``seed``.
    ``progress``: show a progress bar while decoding.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"source must be 'cifar10', 'cifar100' or a folder path, got {source!r}")
    size_hw = parse_image_size(image_size)
    if str(source) in CIFAR_SPECS:
        archive_root = Path(root) if root is not None else default_cache_dir(cache_dir)
        data = load_cifar(str(source), split, root=archive_root, download=download)
        if size_hw is not None and size_hw != data.image_size:
            data = _resize(data, size_hw)
    else:
        if root is not None:
            raise DataError(f"root applies to 'cifar10'/'cifar100' only; for a class-folder "
                            f"source pass its path as source "
                            f"(got source={source!r}, root={root!r})")
        if not Path(source).expanduser().is_dir():
            raise DataError(f"source must be 'cifar10', 'cifar100' or an existing class-folder "
                            f"root, got {str(source)!r} (no such folder)")
        data = load_folder_split(source, split, size_hw, cache_dir=cache_dir,
                                 skip_bad=skip_bad, progress=progress)
    if limit is not None:
        data = data.subset(balanced_indices(data.labels, data.num_classes, limit, seed,
                                            classes=data.classes))
    return data


def load_folder_split(root: str | os.PathLike, split: str, size_hw: tuple[int, int] | None, *,
                      cache_dir: str | os.PathLike | None = None, skip_bad: bool = False,
                      progress: bool = True) -> ImageTensors:
    """A class-folder split from the cache, decoding and caching it first if needed.

    mean/std are those of the train split (at the same image size): for a test split they come
    from the train entry's record, decoding train first if it is not cached yet.
    """
    files = scan_split(root, split)
    cache = default_cache_dir(cache_dir)
    key = cache_key(files, size_hw)
    entry = load_entry(cache, key)
    if entry is not None:
        images, labels, meta = entry
        if meta["skipped"] and not skip_bad:
            raise DataError(f"cannot decode image {meta['skipped'][0]} ({len(meta['skipped'])} "
                            f"unreadable files in all; to leave them out: {SKIP_BAD_HINT})")
        mean, std = tuple(meta["mean"]), tuple(meta["std"])
        if Path(files.folder).name != "train":
            # The train folder may have changed since this entry was written: take its current
            # statistics (from its cache record: a JSON read when train is cached).
            mean, std = _train_stats(root, size_hw, cache_dir, skip_bad, progress)
        skipped = meta["skipped"]
    else:
        decoded = decode_files([f.path for f in files.files], size_hw, skip_bad=skip_bad,
                               progress=progress, desc=f"decoding {Path(files.folder).name}")
        images = torch.from_numpy(decoded.images)
        all_labels = torch.tensor([f.label for f in files.files], dtype=torch.int64)
        labels = all_labels[torch.from_numpy(decoded.kept)]
        if Path(files.folder).name == "train":
            mean, std = channel_stats(images)
        else:
            mean, std = _train_stats(root, size_hw, cache_dir, skip_bad, progress)
        skipped = decoded.skipped
        save_entry(cache, key, images, labels, {
            "source": str(files.root), "split": split, "folder": files.folder,
            "classes": files.classes, "mean": list(mean), "std": list(std), "skipped": skipped,
            "image_size": list(size_hw) if size_hw else None})
    return ImageTensors(images=images, labels=labels, classes=list(files.classes),
                        source=str(files.root), mean=mean, std=std, skipped=list(skipped))


def _train_stats(root, size_hw, cache_dir, skip_bad, progress):
    train_files = scan_split(root, "train")
    record = read_meta(default_cache_dir(cache_dir), cache_key(train_files, size_hw))
    if record is not None and "mean" in record and "std" in record:
        return tuple(record["mean"]), tuple(record["std"])
    train = load_folder_split(root, "train", size_hw, cache_dir=cache_dir, skip_bad=skip_bad,
                              progress=progress)
    return train.mean, train.std


def balanced_indices(labels: torch.Tensor, num_classes: int, limit: int, seed: int = 0, *,
                     classes: Sequence[str] | None = None) -> torch.Tensor:
    """Indices of ``limit // num_classes`` samples of every class, random under ``seed``.

    Returned in ascending order. Raises :class:`DataError` when ``limit < num_classes`` or a
    class has fewer samples than its share.
    """
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise DataError(f"limit must be an int, got {limit!r}")
    if limit < num_classes:
        raise DataError(f"limit must be at least the number of classes ({num_classes}) to keep "
                        f"the subset balanced, got {limit}")
    per_class = limit // num_classes
    counts = torch.bincount(labels, minlength=num_classes)
    short = torch.nonzero(counts < per_class).flatten()
    if short.numel():
        c = int(short[0])
        name = classes[c] if classes is not None else str(c)
        raise DataError(f"limit={limit} needs {per_class} images per class, but class "
                        f"{name!r} has only {int(counts[c])}")
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(labels.numel(), generator=generator)
    # Group the shuffled positions by class (stable sort keeps the shuffle within a class), then
    # keep the first per_class of each group: rank within class = position - start of its group.
    order = torch.sort(labels[perm], stable=True).indices
    grouped = perm[order]
    grouped_labels = labels[grouped]
    starts = torch.cumsum(counts, 0) - counts  # first position of each class in the grouping
    rank = torch.arange(grouped.numel()) - starts[grouped_labels]
    return torch.sort(grouped[rank < per_class]).values


def _resize(data: ImageTensors, size_hw: tuple[int, int], chunk: int = 4096) -> ImageTensors:
    """Resize every image (bilinear, antialiased when shrinking) to ``size_hw``, as uint8."""
    out = torch.empty((len(data), 3, *size_hw), dtype=torch.uint8)
    for start in range(0, len(data), chunk):  # chunks bound the float32 working memory
        x = data.images[start:start + chunk].to(torch.float32)
        y = F.interpolate(x, size=size_hw, mode="bilinear", align_corners=False, antialias=True)
        out[start:start + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return ImageTensors(images=out, labels=data.labels, classes=data.classes, source=data.source,
                        mean=data.mean, std=data.std, skipped=data.skipped)
