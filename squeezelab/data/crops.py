"""Multi-crop testing: the crops a classifier's logits are averaged over at test time.

* 10-crop (AlexNet, Krizhevsky et al. 2012; SqueezeNet's evaluation): the four corner crops
  and the centre crop of the image at the crop size, and the mirror image of each.
* 144-crop (GoogLeNet, Szegedy et al. 2014, arXiv 1409.4842, section 6): the image resized to
  4 scales (shorter side 256, 288, 320 and 352 for 224-pixel crops, scaled by crop / 224 for
  other crop sizes), 3 squares of each (left, centre and right; top, centre and bottom for a
  portrait image), from each square the 4 corner and the centre crop plus the whole square
  resized to the crop size (6), and the mirror image of each: 4 x 3 x 6 x 2 = 144. For a
  square image the 3 squares coincide (the paper's images were not square); the count stays
  144, as the definition gives it.

* Translations (the fast CIFAR recipes' test-time augmentation, e.g. Keller Jordan's airbench):
  the image itself and the image shifted by ``t`` pixels down-right and up-left (the uncovered
  border black, as CIFAR's training crops pad), weighted 1/2, 1/4, 1/4: ``translated_views``.

Functions work on a batch (N, C, H, W) of float images and yield one (N, C, size, size) batch
per crop, so a caller never holds all crops at once (144 copies of a batch of 224-pixel images
would be 144 x the batch's memory). A centre crop's offset is floor((H - size) / 2).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

#: how many crops each multi-crop protocol takes (mirrors included)
CROP_COUNTS = (1, 10, 144)
#: GoogLeNet's four scales: the shorter side for 224-pixel crops
GOOGLENET_SCALES = (256, 288, 320, 352)


def _check(images: torch.Tensor, size: int) -> tuple[int, int]:
    if images.dim() != 4:
        raise ValueError(f"images must be a (N, C, H, W) batch, got shape {tuple(images.shape)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"crop size must be a positive integer, got {size!r}")
    h, w = images.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"crop size {size} is larger than the {h}x{w} images")
    return h, w


def five_crop_offsets(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of the four corner crops (top-left, top-right, bottom-left, bottom-right)
    and the centre crop of a ``height`` x ``width`` image."""
    return [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size),
            ((height - size) // 2, (width - size) // 2)]


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` crop of every image."""
    h, w = _check(images, size)
    top, left = five_crop_offsets(h, w, size)[4]
    return images[..., top:top + size, left:left + size]


def ten_crops(images: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """The 10 crops: the four corners and the centre (``five_crop_offsets`` order), then the
    mirror image of each in the same order."""
    h, w = _check(images, size)
    crops = [images[..., t:t + size, left:left + size]
             for t, left in five_crop_offsets(h, w, size)]
    yield from crops
    for c in crops:
        yield c.flip(-1)


def _resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if tuple(images.shape[-2:]) == (height, width):
        return images
    return F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False,
                         antialias=True)


def googlenet_crops(images: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """GoogLeNet's 144 crops (module docstring), scale by scale, square by square; within a
    square its 4 corners, its centre and the whole square resized, each followed by its mirror
    image."""
    h, w = _check(images, size)
    for scale in GOOGLENET_SCALES:
        short = max(size, round(scale * size / 224))  # 256 -> 37 for 32-pixel crops
        if h <= w:
            rh, rw = short, max(short, round(w * short / h))
        else:
            rh, rw = max(short, round(h * short / w)), short
        resized = _resize(images, rh, rw)
        long_side = max(rh, rw)
        for start in (0, (long_side - short) // 2, long_side - short):
            square = (resized[..., :, start:start + short] if rh <= rw
                      else resized[..., start:start + short, :])
            views = [square[..., t:t + size, left:left + size]
                     for t, left in five_crop_offsets(short, short, size)]
            views.append(_resize(square, size, size))
            for v in views:
                yield v
                yield v.flip(-1)


def multi_crops(images: torch.Tensor, crops: int, size: int | None = None, pad: int = 0,
                pad_value: float | torch.Tensor = 0.0) -> Iterator[torch.Tensor]:
    """The crops of a protocol: ``crops`` 1 (the centre crop; the image itself when ``size``
    is its size), 10 or 144, of side ``size`` (None: the images' own size), after padding each
    image by ``pad`` pixels of ``pad_value`` on every side (a number, or one per channel:
    CIFAR's padding is black in pixel space, -mean/std once normalised)."""
    if crops not in CROP_COUNTS:
        raise ValueError(f"crops must be one of {CROP_COUNTS}, got {crops!r}")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be an integer >= 0, got {pad!r}")
    if images.dim() != 4:
        raise ValueError(f"images must be a (N, C, H, W) batch, got shape {tuple(images.shape)}")
    if size is None:
        size = min(images.shape[-2:])
    if pad:
        images = pad_images(images, pad, pad_value)
    if crops == 1:
        yield center_crop(images, size)
    elif crops == 10:
        yield from ten_crops(images, size)
    else:
        yield from googlenet_crops(images, size)


def pad_images(images: torch.Tensor, pad: int,
               pad_value: float | torch.Tensor = 0.0) -> torch.Tensor:
    """``images`` (N, C, H, W) with ``pad`` pixels of ``pad_value`` (a number, or one per
    channel) on every side."""
    fill = torch.as_tensor(pad_value, dtype=images.dtype, device=images.device)
    if fill.dim() == 1:
        if fill.numel() != images.shape[1]:
            raise ValueError(f"pad_value has {fill.numel()} values for {images.shape[1]} "
                             "channels")
        fill = fill.view(1, -1, 1, 1)
    n, c, h, w = images.shape
    padded = fill.expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    padded[..., pad:pad + h, pad:pad + w] = images
    return padded


#: the weight of the image itself and of each of its two translated copies
TRANSLATION_WEIGHTS = (0.5, 0.25, 0.25)


def translated_views(images: torch.Tensor, shift: int, pad_value: float | torch.Tensor = 0.0
                     ) -> list[tuple[float, torch.Tensor]]:
    """(weight, view) pairs of translation testing: ``images`` itself (1/2) and shifted by
    ``shift`` pixels down-right and up-left (1/4 each), the uncovered border ``pad_value``."""
    if isinstance(shift, bool) or not isinstance(shift, int) or shift < 1:
        raise ValueError(f"shift must be an integer >= 1, got {shift!r}")
    if images.dim() != 4:
        raise ValueError(f"images must be a (N, C, H, W) batch, got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    padded = pad_images(images, shift, pad_value)
    down_right = padded[..., :h, :w]  # content moves down and right by `shift`
    up_left = padded[..., 2 * shift:2 * shift + h, 2 * shift:2 * shift + w]
    return list(zip(TRANSLATION_WEIGHTS, (images, down_right, up_left)))


__all__ = ["CROP_COUNTS", "GOOGLENET_SCALES", "TRANSLATION_WEIGHTS", "center_crop",
           "five_crop_offsets", "googlenet_crops", "multi_crops", "pad_images", "ten_crops",
           "translated_views"]
