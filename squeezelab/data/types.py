"""The in-memory form of an image data set: decoded uint8 tensors plus their labels and statistics.

Every source (the official CIFAR-10/100 archives of Krizhevsky 2009, or ImageNet-style class
folders) is decoded once into an :class:`ImageTensors`; the batch loader and the augmentations
work on it with whole-batch tensor operations, as airbench (Jordan 2024, arXiv 2404.00498) does
to keep CIFAR-10 training fast.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch


class DataError(ValueError):
    """Every data-path problem: a missing or damaged file, an unexpected layout, a bad argument."""


# How to act on an error, said for every kind of user: the flag that each command which loads
# data accepts, the recipe key (a TrainConfig field) and the keyword of the library functions.
DOWNLOAD_HINT = ("--download true on the command line (download: true in a recipe, "
                 "download=True in Python)")
SKIP_BAD_HINT = ("--skip-bad-images true on the command line (skip_bad_images: true in a "
                 "recipe, skip_bad=True in Python)")


@dataclass
class ImageTensors:
    """A decoded split of an image data set.

    ``images``: uint8 (N, 3, H, W) on the CPU, pixel values 0..255.
    ``labels``: int64 (N,), each in ``0 .. len(classes) - 1``.
    ``classes``: class names; label ``i`` is ``classes[i]``.
    ``source``: where it came from ("cifar10", "cifar100" or a folder path).
    ``mean`` / ``std``: per-channel (R, G, B) statistics of the *train* split in 0..1 units,
    used for normalisation of every split.
    ``skipped``: files that could not be decoded and were left out (``skip_bad=True``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8:
            raise DataError(f"images must be a uint8 tensor, got {_describe(self.images)}")
        if self.images.dim() != 4 or self.images.shape[1] != 3:
            raise DataError(f"images must have shape (N, 3, H, W), got {tuple(self.images.shape)}")
        if self.images.device.type != "cpu":
            raise DataError(f"images must be on the CPU, got device {self.images.device}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64:
            raise DataError(f"labels must be an int64 tensor, got {_describe(self.labels)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"labels must have shape ({self.images.shape[0]},) to match the images, "
                f"got {tuple(self.labels.shape)}"
            )
        self.classes = [str(c) for c in self.classes]
        if not self.classes:
            raise DataError("classes must not be empty")
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"class names must be unique, got {self.classes}")
        if self.labels.numel() and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)
        ):
            raise DataError(
                f"labels must be in [0, {len(self.classes) - 1}], got values in "
                f"[{int(self.labels.min())}, {int(self.labels.max())}]"
            )
        self.mean = rgb_triple("mean", self.mean, positive=False)
        self.std = rgb_triple("std", self.std, positive=True)
        self.skipped = [str(s) for s in self.skipped]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageTensors:
        """The images at ``indices`` (in that order), keeping classes, statistics and source."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        if index.dim() != 1:
            raise DataError(f"indices must be one-dimensional, got shape {tuple(index.shape)}")
        n = len(self)
        if index.numel() and (int(index.min()) < -n or int(index.max()) >= n):
            raise DataError(f"indices must be in [{-n}, {n - 1}], got values in "
                            f"[{int(index.min())}, {int(index.max())}]")
        return replace(self, images=self.images[index], labels=self.labels[index],
                       classes=list(self.classes), skipped=list(self.skipped))


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of dtype {x.dtype}"
    return type(x).__name__


def rgb_triple(name: str, value: Sequence[float], *, positive: bool) -> tuple[float, float, float]:
    """Three per-channel (R, G, B) values in 0..1 pixel units as floats; ``positive`` also
    refuses 0 (a std)."""
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise DataError(f"{name} must have 3 values (R, G, B), got {len(values)}")
    for v in values:
        if not (0.0 <= v <= 1.0) or (positive and v == 0.0):
            raise DataError(f"{name} values must be in {'(0' if positive else '[0'}, 1] "
                            f"(0..1 pixel units), got {values}")
    return values  # type: ignore[return-value]
