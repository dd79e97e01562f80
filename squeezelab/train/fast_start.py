"""Two ways to get more out of the first minutes of a short training run on a CPU:

* **Progressive resizing** (``progressive_sizes``; fast.ai's DAWNBench entries): the epochs are
  split into equal shares, one per size, and each training batch is resized (bilinear,
  antialiased) to its share's size. A network that ends in global pooling (every SqueezeNet)
  takes any size; at 24 px an epoch costs (24/32)^2 = 56% of the 32 px one's multiply-adds.
  The test set is always scored at the images' own size.
* **A whitening-initialised stem** (``stem_init: whitening``; Keller Jordan's airbench,
  arXiv 2404.00498): the first convolution's filters start as the PCA whitening of the
  training images' patches: filter ``i`` is eigenvector ``v_i`` of the patch covariance over
  ``sqrt(lambda_i + eps)``, and its negation beside it (so a ReLU keeps both signs), so the
  stem's outputs start decorrelated and of unit variance; filters beyond twice the patch size
  keep their random start. The filters then train as any other.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

#: how many training images the patch covariance is estimated from: 5,000 of CIFAR's 32 px,
#: fewer of larger images (as many pixels, at least 100 images)
WHITENING_IMAGES = 5000
_WHITENING_PIXELS = WHITENING_IMAGES * 32 * 32


def size_for_epoch(sizes: list[int] | None, epoch: int, epochs: int) -> int | None:
    """The training image size of ``epoch`` (0-based) of ``epochs`` under progressive
    ``sizes`` (equal shares of the epochs, in order), or None without them."""
    if not sizes:
        return None
    return sizes[min(len(sizes) - 1, epoch * len(sizes) // max(epochs, 1))]


def resize_batch(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """``images`` (N, C, H, W) resized to ``size`` square (bilinear, antialiased), keeping
    their memory format; unchanged where ``size`` is None or already theirs."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    channels_last = (not images.is_contiguous()
                     and images.is_contiguous(memory_format=torch.channels_last))
    out = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def stem_conv(model: nn.Module) -> nn.Conv2d:
    """The model's first convolution (the one the images go into)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError(f"{type(model).__name__} has no Conv2d to whiten")


@torch.no_grad()
def whitening_filters(images: torch.Tensor, kernel_size: int, eps: float = 5e-4,
                      chunk: int = 500) -> torch.Tensor:
    """(2 * d, C, k, k) filters, d = C * k * k: the PCA whitening of ``images``' k x k patches
    (normalised float images (N, C, H, W)), each eigenvector over sqrt(eigenvalue + eps)
    followed by its negation, the largest eigenvalue first."""
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    c, k = images.shape[1], kernel_size
    d = c * k * k
    total = torch.zeros(d, dtype=torch.float64)
    outer = torch.zeros(d, d, dtype=torch.float64)
    count = 0
    for start in range(0, images.shape[0], chunk):
        patches = F.unfold(images[start:start + chunk].double(), k)  # (n, d, L)
        patches = patches.transpose(1, 2).reshape(-1, d)
        total += patches.sum(0)
        outer += patches.T @ patches
        count += patches.shape[0]
    if count < 2:
        raise ValueError("whitening needs images larger than the kernel")
    mean = total / count
    cov = outer / count - torch.outer(mean, mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    order = eigenvalues.flip(0).clamp(min=0)
    vectors = eigenvectors.flip(1).T  # rows, largest eigenvalue first
    filters = (vectors / (order + eps).sqrt()[:, None]).float().reshape(d, c, k, k)
    return torch.stack([filters, -filters], dim=1).reshape(2 * d, c, k, k)


@torch.no_grad()
def whiten_stem_(model: nn.Module, images: torch.Tensor, eps: float = 5e-4) -> int:
    """Set the first ``min(out_channels, 2 * C * k * k)`` filters of ``model``'s stem to the
    whitening filters of ``images`` (normalised floats); returns how many were set."""
    conv = stem_conv(model)
    if conv.groups != 1 or conv.kernel_size[0] != conv.kernel_size[1]:
        raise ValueError(f"the stem {conv} is not a square, ungrouped convolution: it cannot "
                         "start as a patch whitening")
    if images.shape[1] != conv.in_channels:
        raise ValueError(f"images have {images.shape[1]} channels, the stem takes "
                         f"{conv.in_channels}")
    filters = whitening_filters(images, conv.kernel_size[0], eps)
    n = min(conv.out_channels, filters.shape[0])
    conv.weight[:n] = filters[:n].to(conv.weight.dtype)
    if conv.bias is not None:
        conv.bias[:n] = 0
    return n


def whitening_sample(data, count: int | None = None, seed: int = 0) -> torch.Tensor:
    """Up to ``count`` training images of ImageTensors ``data`` (default: ``WHITENING_IMAGES``
    CIFAR-sized images' worth of pixels), as normalised float32: the images the stem will
    see, without augmentation."""
    from squeezelab.data.augment import to_normalized

    if count is None:
        count = max(100, _WHITENING_PIXELS // (data.images.shape[-1] * data.images.shape[-2]))
    n = len(data)
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:min(n, count)]
    return to_normalized(data.images[pick], data.mean, data.std, torch.float32)


__all__ = ["WHITENING_IMAGES", "resize_batch", "size_for_epoch", "stem_conv", "whiten_stem_",
           "whitening_filters", "whitening_sample"]
