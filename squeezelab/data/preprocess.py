"""How a trained model expects its input: the image size it was trained at and the per-channel
mean and std its inputs were normalised with.

Every model file squeezelab writes (checkpoint, ``.sqz``, the ONNX file's metadata) carries this
record, so a shipped model can classify a photo without the data it was trained on. The steps
are the test-time path of training, image by image: decode -> RGB -> resize the whole image
(bilinear) to ``image_size`` -> ``(pixels / 255 - mean) / std``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from squeezelab.data.augment import to_normalized
from squeezelab.data.folders import decode_files, parse_image_size, walk_files
from squeezelab.data.types import DataError, ImageTensors, rgb_triple

# The keys of a model file's meta that hold the record (mean/std predate image_size).
META_KEYS = ("image_size", "mean", "std")


@dataclass(frozen=True)
class Preprocess:
    """``image_size``: (height, width) in pixels; ``mean``/``std``: per channel (R, G, B) in
    0..1 pixel units, those of the training split."""

    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", parse_image_size(self.image_size))
        object.__setattr__(self, "mean", rgb_triple("mean", self.mean, positive=False))
        object.__setattr__(self, "std", rgb_triple("std", self.std, positive=True))

    @classmethod
    def from_data(cls, data: ImageTensors) -> Preprocess:
        """The record of a model trained (or fine-tuned) on ``data``."""
        return cls(data.image_size, data.mean, data.std)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any],
                  image_size: int | Sequence[int] | None = None) -> Preprocess | None:
        """The record in a model file's meta, or ``None`` if it has no mean/std. ``image_size``
        stands in for files written before the size was recorded (mean/std were first)."""
        if meta.get("mean") is None or meta.get("std") is None:
            return None
        size = meta.get("image_size") or image_size
        if size is None:
            return None
        return cls(tuple(size) if isinstance(size, list) else size, meta["mean"], meta["std"])

    def to_meta(self) -> dict[str, list]:
        """JSON-ready, to merge into a model file's meta."""
        return {"image_size": list(self.image_size), "mean": list(self.mean),
                "std": list(self.std)}

    def load_images(self, paths: Sequence[str | os.PathLike], *, skip_bad: bool = False,
                    progress: bool = False) -> tuple[torch.Tensor, list[str]]:
        """Image files -> (float32 (N, 3, H, W) ready for the model, the paths of those N).

        An unreadable file raises :class:`DataError` naming it; with ``skip_bad`` it is left
        out instead, so the paths returned are the ones the rows belong to.
        """
        paths = [str(p) for p in paths]
        decoded = decode_files(paths, self.image_size, skip_bad=skip_bad, progress=progress,
                               desc="reading images")
        kept = [paths[i] for i in decoded.kept.tolist()]
        return self.normalize(torch.from_numpy(decoded.images)), kept

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) at ``image_size`` -> float32, normalised as in training."""
        if tuple(images.shape[2:]) != self.image_size:
            raise DataError(f"images are {tuple(images.shape[2:])} (height, width); the model "
                            f"was trained at {self.image_size}")
        return to_normalized(images, self.mean, self.std, torch.float32)


def image_files(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Files as given and, for each folder, the non-hidden files under it (sorted, recursive).
    A path that does not exist, or a folder with no files, raises ``FileNotFoundError``."""
    files: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = [p for p, _ in walk_files(path)]
            if not found:
                raise FileNotFoundError(f"{path}: the folder has no files")
            files += found
        elif path.is_file():
            files.append(str(path))
        else:
            raise FileNotFoundError(f"{path} does not exist")
    if not files:
        raise FileNotFoundError("no image files given")
    return files


__all__ = ["META_KEYS", "Preprocess", "image_files"]
