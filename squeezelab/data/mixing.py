"""Mixing whole training batches: mixup (Zhang et al. 2018, arXiv 1710.09412) and CutMix (Yun
et al. 2019, arXiv 1905.04899).

Each pairs every image of a batch with another of the same batch (a random permutation) and
blends them -- mixup pixel by pixel with weight ``lam``, CutMix by pasting a box of the partner
into the image -- and the targets the same way: ``lam`` of the image's own one-hot label plus
``1 - lam`` of its partner's. One ``lam ~ Beta(alpha, alpha)`` per batch, as both papers draw
it. The targets are class probabilities, which ``torch.nn.functional.cross_entropy`` takes as
they are (label smoothing included), so every loss written for integer labels also trains on
mixed batches.

``BatchMixer`` draws each batch's randomness from a generator keyed by (seed, epoch, rank,
batch): the mixing of batch ``k`` does not depend on how many batches were mixed before it, so a
run resumed in the middle of an epoch mixes the rest of it exactly as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from squeezelab.data.types import DataError

#: the batch-mixing methods, by the name a recipe's ``mix:`` takes
MIX_MODES = ("mixup", "cutmix")


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 (N,) labels -> float32 (N, num_classes) one-hot rows on the labels' device. The
    range is checked where the labels are on the CPU (on a GPU that would wait for it at every
    step; an index out of range fails there on its own)."""
    if labels.dtype != torch.int64 or labels.dim() != 1:
        raise DataError(f"labels must be an int64 (N,) tensor, got {labels.dtype} "
                        f"{tuple(labels.shape)}")
    if labels.device.type == "cpu" and labels.numel() and not (
            0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise DataError(f"labels must lie in [0, {num_classes}), got "
                        f"[{int(labels.min())}, {int(labels.max())}]")
    out = torch.zeros(labels.shape[0], num_classes, device=labels.device)
    return out.scatter_(1, labels[:, None], 1.0)


def _check_batch(images: torch.Tensor, labels: torch.Tensor, perm: torch.Tensor) -> None:
    if images.dim() != 4 or not images.dtype.is_floating_point:
        raise DataError(f"images must be a floating (N, C, H, W) batch, got {images.dtype} "
                        f"{tuple(images.shape)}")
    n = images.shape[0]
    if labels.shape[0] != n or perm.shape != (n,):
        raise DataError(f"a batch of {n} images needs {n} labels and a permutation of {n}, got "
                        f"{labels.shape[0]} labels and {tuple(perm.shape)}")


def mixup(images: torch.Tensor, labels: torch.Tensor, num_classes: int, lam: float,
          perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``lam * x + (1 - lam) * x[perm]`` and the same blend of the one-hot targets."""
    _check_batch(images, labels, perm)
    if not 0.0 <= lam <= 1.0:
        raise DataError(f"mixup weight lam must be in [0, 1], got {lam}")
    perm = perm.to(images.device)
    targets = one_hot(labels, num_classes)
    mixed = images * lam + images.index_select(0, perm) * (1.0 - lam)
    return mixed, targets * lam + targets.index_select(0, perm) * (1.0 - lam)


def cutmix_box(height: int, width: int, lam: float, cy: int, cx: int
               ) -> tuple[int, int, int, int]:
    """The box CutMix pastes: ``sqrt(1 - lam)`` of each side, centred on (cy, cx) and clipped
    to the image, as (y0, y1, x0, x1); empty when ``lam`` is 1."""
    cut = float(np.sqrt(1.0 - lam))
    ch, cw = int(round(height * cut)), int(round(width * cut))
    y0, y1 = max(cy - ch // 2, 0), min(cy - ch // 2 + ch, height)
    x0, x1 = max(cx - cw // 2, 0), min(cx - cw // 2 + cw, width)
    return y0, max(y1, y0), x0, max(x1, x0)


def cutmix(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
           box: tuple[int, int, int, int], perm: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``box`` (y0, y1, x0, x1) of each partner ``x[perm]`` into each image; the targets
    weigh the partner by the box's share of the image (after clipping), the rest the image."""
    _check_batch(images, labels, perm)
    h, w = images.shape[-2:]
    y0, y1, x0, x1 = box
    if not (0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w):
        raise DataError(f"CutMix box (y0, y1, x0, x1) = {box} does not lie in a {h}x{w} image")
    perm = perm.to(images.device)
    mixed = images.clone()
    mixed[:, :, y0:y1, x0:x1] = images.index_select(0, perm)[:, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    targets = one_hot(labels, num_classes)
    return mixed, targets * lam + targets.index_select(0, perm) * (1.0 - lam)


@dataclass(frozen=True)
class BatchMixer:
    """Mix training batches with ``mode`` (one of ``MIX_MODES``), ``lam ~ Beta(alpha, alpha)``
    per batch, each batch with probability ``prob`` (the others keep their images and get
    one-hot targets); ``seed`` and ``rank`` key the draws with the epoch and batch index."""

    mode: str
    num_classes: int
    alpha: float = 1.0
    prob: float = 1.0
    seed: int = 0
    rank: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MIX_MODES:
            raise DataError(f"mix must be one of {MIX_MODES}, got {self.mode!r}")
        if not self.alpha > 0:
            raise DataError(f"mix_alpha must be > 0, got {self.alpha}")
        if not 0.0 < self.prob <= 1.0:
            raise DataError(f"mix_prob must be in (0, 1], got {self.prob}")
        if self.num_classes < 2:
            raise DataError(f"mixing needs at least 2 classes, got {self.num_classes}")

    def _rng(self, epoch: int, batch: int) -> np.random.Generator:
        # stream 2 of the loader's keys (0: crops and flips, 1: Cutout), then the batch
        return np.random.default_rng(np.random.SeedSequence(
            [self.seed, epoch, self.rank, 2, batch]))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, epoch: int, batch: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``batch`` of ``epoch``, mixed, and its targets as class probabilities."""
        rng = self._rng(epoch, batch)
        n = images.shape[0]
        if rng.random() >= self.prob:
            return images, one_hot(labels, self.num_classes)
        lam = float(rng.beta(self.alpha, self.alpha))
        perm = torch.from_numpy(rng.permutation(n))
        if self.mode == "mixup":
            mixed, targets = mixup(images, labels, self.num_classes, lam, perm)
        else:
            h, w = images.shape[-2:]
            box = cutmix_box(h, w, lam, int(rng.integers(h)), int(rng.integers(w)))
            mixed, targets = cutmix(images, labels, self.num_classes, box, perm)
        if images.is_contiguous(memory_format=torch.channels_last):
            mixed = mixed.contiguous(memory_format=torch.channels_last)
        return mixed, targets


__all__ = ["BatchMixer", "MIX_MODES", "cutmix", "cutmix_box", "mixup", "one_hot"]
