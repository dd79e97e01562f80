"""Data augmentation on whole batches of image tensors (no per-image Python loop).

* CIFAR: random crop with zero padding (pad 4, crop 32) and random horizontal flip, the standard
  CIFAR augmentation (He et al. 2015, arXiv 1512.03385, section 4.2), done as one gather with
  per-sample offsets, as airbench (Jordan 2024, arXiv 2404.00498) does.
* ImageNet-size input: random-resized crop (scale (0.08, 1), aspect ratio (3/4, 4/3); Szegedy
  et al. 2014, arXiv 1409.4842, section 6) plus flip, as one batched ``grid_sample`` over
  per-sample affine boxes.
* Cutout (DeVries & Taylor 2017, arXiv 1708.04552): a square of each image set to zero after
  normalisation (the data set's mean colour), its centre anywhere in the image, so that near a
  border only part of it falls inside, as in the paper.
* Normalisation by per-channel mean and std.

Images are (N, C, H, W) on any device. Random draws use a CPU ``torch.Generator`` when one is
given (then moved to the images' device), so the result depends only on the seed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from squeezelab.data.types import DataError


def _check_images(images: torch.Tensor, what: str = "images") -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"{what} must be a (N, C, H, W) tensor, got {shape}")


def to_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images (0..255) -> floating images in 0..1 units, on the same device."""
    _check_images(images)
    if images.dtype != torch.uint8:
        raise DataError(f"to_float expects uint8 images, got {images.dtype}")
    if not dtype.is_floating_point:
        raise DataError(f"dtype must be a floating dtype, got {dtype}")
    return images.to(dtype).div_(255.0)


def _check_mean_std(channels: int, mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != channels or len(std) != channels:
        raise DataError(f"mean and std need {channels} values (one per channel), got "
                        f"{len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise DataError(f"std values must be positive, got {tuple(std)}")


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(images - mean) / std per channel; images floating in 0..1 units, mean/std 0..1 units."""
    _check_images(images)
    if not images.dtype.is_floating_point:
        raise DataError(f"normalize expects floating images in 0..1, got {images.dtype}")
    channels = images.shape[1]
    _check_mean_std(channels, mean, std)
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, channels, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, channels, 1, 1)
    return (images - m) / s


def to_normalized(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images -> ``(images / 255 - mean) / std`` per channel, as one fused pass.

    Equal to ``normalize(to_float(images), mean, std)`` (up to float rounding), but computes
    ``images * a + b`` with a = 1 / (255 std), b = -mean / std: one multiply-add instead of a
    divide, a subtract and a divide over the batch.
    """
    _check_images(images)
    if images.dtype != torch.uint8:
        raise DataError(f"to_normalized expects uint8 images, got {images.dtype}")
    if not dtype.is_floating_point:
        raise DataError(f"dtype must be a floating dtype, got {dtype}")
    channels = images.shape[1]
    _check_mean_std(channels, mean, std)
    # Coefficients in float64 on the host, then rounded once to the working dtype.
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float64)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float64)
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    scale = scale.to(device=images.device, dtype=work).view(1, channels, 1, 1)
    shift = shift.to(device=images.device, dtype=work).view(1, channels, 1, 1)
    return torch.addcmul(shift, images.to(work), scale).to(dtype)


def crop_flip(images: torch.Tensor, padding: int, offsets_y: torch.Tensor,
              offsets_x: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-pad by ``padding`` px, crop back to (H, W) at per-sample offsets, optionally flip.

    ``offsets_y``/``offsets_x``: int (N,) in ``[0, 2 * padding]``, the crop's top-left corner in
    the padded image (``padding`` = centred, the identity). ``flip``: bool (N,), mirror
    left-right after cropping. Any dtype; one gather for the whole batch.
    """
    _check_images(images)
    n, _, h, w = images.shape
    if padding < 0:
        raise DataError(f"padding must be >= 0, got {padding}")
    device = images.device
    # Checked where they were drawn (the CPU for the random_* functions): no device sync.
    oy = torch.as_tensor(offsets_y).long()
    ox = torch.as_tensor(offsets_x).long()
    for name, off in (("offsets_y", oy), ("offsets_x", ox)):
        if off.shape != (n,):
            raise DataError(f"{name} must have shape ({n},), got {tuple(off.shape)}")
        if n and (int(off.min()) < 0 or int(off.max()) > 2 * padding):
            raise DataError(f"{name} must be in [0, {2 * padding}] for padding {padding}, got "
                            f"values in [{int(off.min())}, {int(off.max())}]")
    if flip is not None:
        flip = torch.as_tensor(flip).bool()
        if flip.shape != (n,):
            raise DataError(f"flip must have shape ({n},), got {tuple(flip.shape)}")
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    padded = padded.contiguous()
    c, ph, pw = padded.shape[1:]
    # One flat gather (torch.take; 3x faster than 4-tensor advanced indexing on CPU): the source
    # of out[n, c, i, j] is padded.flat[n*C*PH*PW + c*PH*PW + (oy[n] + i)*PW + ox[n] + col[n, j]]
    # with col[n, j] = j, or W - 1 - j for a flipped sample.
    base = (torch.arange(n) * (c * ph * pw) + oy * pw + ox).to(device, non_blocking=True)
    cols = torch.arange(w, device=device)
    if flip is not None:
        flip = flip.to(device, non_blocking=True)
        per_sample = torch.where(flip[:, None], (w - 1 - cols)[None, :], cols[None, :])
    else:
        per_sample = cols[None, :].expand(n, w)
    inner = (torch.arange(c, device=device) * (ph * pw))[:, None, None] \
        + (torch.arange(h, device=device) * pw)[None, :, None]  # (C, H, 1)
    index = (base[:, None] + per_sample)[:, None, None, :] + inner[None]  # (N, C, H, W)
    return torch.take(padded, index)


def random_crop_flip(images: torch.Tensor, padding: int = 4, flip: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """CIFAR augmentation: random crop from the zero-padded image (same size) + random flip."""
    _check_images(images)
    n = images.shape[0]
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else None
    return crop_flip(images, padding, oy, ox, flips)


def cutout(images: torch.Tensor, size: int, centers_y: torch.Tensor,
           centers_x: torch.Tensor) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square of each image, centred at per-sample ``centers_y``,
    ``centers_x`` (int (N,), in ``[0, H)`` and ``[0, W)``) and clipped at the border: rows
    ``cy - size // 2`` to ``cy - size // 2 + size - 1``, columns likewise. Returns a new tensor
    (any dtype; apply it to normalised images for the paper's mean-colour patch)."""
    _check_images(images)
    n, _, h, w = images.shape
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"cutout size must be a positive int, got {size!r}")
    cy, cx = torch.as_tensor(centers_y).long(), torch.as_tensor(centers_x).long()
    for name, c, limit in (("centers_y", cy, h), ("centers_x", cx, w)):
        if c.shape != (n,):
            raise DataError(f"{name} must have shape ({n},), got {tuple(c.shape)}")
        if n and (int(c.min()) < 0 or int(c.max()) >= limit):
            raise DataError(f"{name} must be in [0, {limit}), got values in "
                            f"[{int(c.min())}, {int(c.max())}]")
    top = (cy - size // 2).to(images.device)[:, None]
    left = (cx - size // 2).to(images.device)[:, None]
    rows = torch.arange(h, device=images.device)[None, :]
    cols = torch.arange(w, device=images.device)[None, :]
    inside_y = (rows >= top) & (rows < top + size)  # (N, H)
    inside_x = (cols >= left) & (cols < left + size)  # (N, W)
    patch = inside_y[:, None, :, None] & inside_x[:, None, None, :]  # (N, 1, H, W)
    return images.masked_fill(patch, 0)


def random_cutout(images: torch.Tensor, size: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``cutout`` at centres drawn uniformly over each image (16 px for CIFAR-10 in the
    paper)."""
    _check_images(images)
    n, _, h, w = images.shape
    cy = torch.randint(0, h, (n,), generator=generator)
    cx = torch.randint(0, w, (n,), generator=generator)
    return cutout(images, size, cy, cx)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half (probability 0.5 each) of the batch left-right."""
    _check_images(images)
    flips = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flips[:, None, None, None], images.flip(-1), images)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size_hw: Sequence[int],
                 flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop per-sample ``boxes`` and resize each to ``size_hw`` (bilinear), optionally flipped.

    ``boxes``: (N, 4) as (x0, y0, width, height) in input pixels. Floating images only. The
    affine map sends output pixel centres onto the box's pixel centres (``align_corners=False``):
    with normalised coordinates, x_in = (w / W) * x_out + (2 * x0 + w) / W - 1.
    """
    _check_images(images)
    if not images.dtype.is_floating_point:
        raise DataError(f"resized_crop expects floating images, got {images.dtype}")
    n, c, h, w = images.shape
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    if boxes.shape != (n, 4):
        raise DataError(f"boxes must have shape ({n}, 4) as (x0, y0, width, height), got "
                        f"{tuple(boxes.shape)}")
    if n and bool((boxes[:, 2:] <= 0).any()):
        raise DataError("boxes must have positive width and height")
    x0, y0, bw, bh = boxes.unbind(1)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = bw / w
    theta[:, 0, 2] = (2 * x0 + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * y0 + bh) / h - 1
    if flip is not None:
        flip = torch.as_tensor(flip).bool().cpu()
        if flip.shape != (n,):
            raise DataError(f"flip must have shape ({n},), got {tuple(flip.shape)}")
        theta[:, 0, 0] = torch.where(flip, -theta[:, 0, 0], theta[:, 0, 0])
    out_h, out_w = (int(s) for s in size_hw)
    grid = F.affine_grid(theta.to(device=images.device, dtype=images.dtype), [n, c, out_h, out_w],
                         align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sample_resized_crop_boxes(num_samples: int, height: int, width: int,
                              scale: Sequence[float] = (0.08, 1.0),
                              ratio: Sequence[float] = (3 / 4, 4 / 3), attempts: int = 10,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """Random-resized-crop boxes (N, 4) as integer-valued (x0, y0, width, height), float64.

    For each sample: up to ``attempts`` candidates with area fraction ~ U(scale) and aspect ratio
    (w / h) log-uniform in ``ratio``; the first that fits is placed uniformly at random. When
    none fits, the central crop with the ratio clamped to ``ratio`` (the usual fallback).
    All samples and attempts are drawn at once.
    """
    if not (0 < scale[0] <= scale[1] <= 1):
        raise DataError(f"scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
    if not (0 < ratio[0] <= ratio[1]):
        raise DataError(f"ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
    n = num_samples
    area = float(height * width)
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, attempts, generator=generator,
                                                                   dtype=torch.float64))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, attempts, generator=generator,
                                                               dtype=torch.float64))
    cand_w = torch.round(torch.sqrt(target * aspect))
    cand_h = torch.round(torch.sqrt(target / aspect))
    fits = (cand_w > 0) & (cand_w <= width) & (cand_h > 0) & (cand_h <= height)
    first = torch.argmax(fits.to(torch.int8), dim=1)  # index of the first fitting attempt
    found = fits.any(dim=1)
    rows = torch.arange(n)
    bw, bh = cand_w[rows, first], cand_h[rows, first]
    # Fallback: whole image, cropped to the nearest allowed aspect ratio, centred.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = float(width), float(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = float(round(height * ratio[1])), float(height)
    else:
        fw, fh = float(width), float(height)
    bw = torch.where(found, bw, torch.full_like(bw, fw))
    bh = torch.where(found, bh, torch.full_like(bh, fh))
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    x0 = torch.where(found, torch.floor(u[:, 0] * (width - bw + 1)),
                     torch.floor((width - bw) / 2))
    y0 = torch.where(found, torch.floor(u[:, 1] * (height - bh + 1)),
                     torch.floor((height - bh) / 2))
    return torch.stack([x0, y0, bw, bh], dim=1)


def random_resized_crop(images: torch.Tensor, size_hw: Sequence[int] | None = None,
                        scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3), flip: bool = True,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """ImageNet-style augmentation: random-resized crop to ``size_hw`` (default: the input's
    size) plus a random horizontal flip, for a whole floating batch."""
    _check_images(images)
    n, _, h, w = images.shape
    boxes = sample_resized_crop_boxes(n, h, w, scale, ratio, generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else None
    return resized_crop(images, boxes, size_hw if size_hw is not None else (h, w), flips)
