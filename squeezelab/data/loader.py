"""Batches from decoded uint8 tensors: shuffling and DDP sharding by seed and epoch, batched
augmentation, normalisation.

In the manner of airbench (Jordan 2024, arXiv 2404.00498): the data stay one uint8 tensor (on
the GPU when training there and it fits), each batch is gathered by index, converted to float
and augmented as a whole on the target device. With ``world_size > 1`` every rank takes a
disjoint strided shard of the same per-epoch permutation, as PyTorch's ``DistributedSampler``
does, so all ranks run the same number of batches.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from squeezelab.data.augment import crop_flip, random_cutout, random_resized_crop, to_normalized
from squeezelab.data.types import DataError, ImageTensors

AUGMENTS = ("cifar", "imagenet")
CIFAR_PADDING_PX = 4  # pad 4, crop 32: the standard CIFAR augmentation
# A uint8 data set up to this size is moved to the GPU once (50k CIFAR images are 150 MiB).
MAX_DEVICE_RESIDENT_BYTES = 4 << 30


class BatchLoader:
    """Iterate ``(images, labels)`` batches of ``data`` for one epoch on this rank.

    ``images``: ``dtype`` (N, 3, H, W) normalised with ``data.mean``/``data.std``, on
    ``device`` (channels-last memory if asked); ``labels``: int64 (N,) on ``device``.
    ``train``: shuffle with a permutation from ``seed + epoch`` (else keep order).
    ``augment``: "cifar" (pad-``crop_padding`` crop + flip: black padding, 4 px the standard
    and 2 airbench's), "imagenet" (random-resized crop + flip) or None; only for train
    loaders. ``cutout``: after those, zero a random square of this side in
    every normalised image (``augment.cutout``; 0: none); train loaders only.
    ``drop_last``: drop the last incomplete batch (default: = train).
    ``rank``/``world_size``: this process's shard. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, data: ImageTensors, batch_size: int, *, train: bool,
                 augment: str | None = None, seed: int = 0, device: str | torch.device = "cpu",
                 drop_last: bool | None = None, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32,
                 cutout: int = 0, crop_padding: int = CIFAR_PADDING_PX):
        if not isinstance(data, ImageTensors):
            raise DataError(f"data must be an ImageTensors, got {type(data).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive int, got {batch_size!r}")
        if augment is not None and augment not in AUGMENTS:
            raise DataError(f"augment must be one of {AUGMENTS} or None, got {augment!r}")
        if augment is not None and not train:
            raise DataError(f"augment={augment!r} is for training loaders; pass train=True or "
                            "augment=None")
        if isinstance(cutout, bool) or not isinstance(cutout, int) or cutout < 0:
            raise DataError(f"cutout must be a non-negative int (pixels), got {cutout!r}")
        if cutout and not train:
            raise DataError(f"cutout={cutout} is for training loaders; pass train=True or "
                            "cutout=0")
        if world_size < 1 or not (0 <= rank < world_size):
            raise DataError(f"rank must be in [0, world_size) with world_size >= 1, got "
                            f"rank={rank}, world_size={world_size}")
        if not dtype.is_floating_point:
            raise DataError(f"dtype must be a floating dtype, got {dtype}")
        if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) \
                or crop_padding < 0:
            raise DataError(f"crop_padding must be a non-negative int (pixels), got "
                            f"{crop_padding!r}")
        if len(data) == 0:
            raise DataError("data holds no images")
        self.data = data
        self.batch_size = batch_size
        self.train = train
        self.augment = augment
        self.cutout = cutout
        self.crop_padding = crop_padding
        self.seed = int(seed)
        self.device = torch.device(device)
        self.drop_last = train if drop_last is None else bool(drop_last)
        self.rank = rank
        self.world_size = world_size
        self.channels_last = channels_last
        self.dtype = dtype
        self.epoch = 0
        n = len(data)
        # Samples per rank: drop the permutation's tail, or pad it by wrapping around.
        self.samples_per_rank = n // world_size if self.drop_last else math.ceil(n / world_size)
        if self.samples_per_rank == 0:
            raise DataError(f"{n} images cannot give every one of {world_size} ranks a sample "
                            "with drop_last=True")
        if self.drop_last and self.samples_per_rank < batch_size:
            raise DataError(f"batch_size {batch_size} is larger than the {self.samples_per_rank} "
                            "samples per rank: a training epoch would have no full batch; "
                            "lower --batch-size (batch_size: in a recipe) or train on more "
                            "images")
        resident = self.device.type != "cpu" and data.images.numel() <= MAX_DEVICE_RESIDENT_BYTES
        source_device = self.device if resident else torch.device("cpu")
        self._images = data.images.to(source_device)
        self._labels = data.labels.to(source_device)
        if not resident and self.device.type == "cuda":
            self._images = self._images.pin_memory()  # enables non_blocking copies per batch
            self._labels = self._labels.pin_memory()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: it seeds the shuffle (``seed + epoch``) and the augmentation."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise DataError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        if self.drop_last:
            return self.samples_per_rank // self.batch_size
        return math.ceil(self.samples_per_rank / self.batch_size)

    def indices(self) -> torch.Tensor:
        """int64 indices into ``data`` of this rank's samples for the current epoch, in order."""
        n = len(self.data)
        if self.train:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        total = self.samples_per_rank * self.world_size
        if total <= n:
            order = order[:total]
        else:  # wrap around so every rank gets the same count (like DistributedSampler)
            order = order.repeat(math.ceil(total / n))[:total]
        return order[self.rank:total:self.world_size]

    def _augment_generator(self, stream: int = 0) -> torch.Generator:
        # Mix (seed, epoch, rank) so ranks and epochs draw independent augmentations; Cutout
        # draws from a stream of its own, so turning it on leaves every crop and flip as it was.
        key = [self.seed, self.epoch, self.rank] + ([stream] if stream else [])
        state = np.random.SeedSequence(key).generate_state(1)
        return torch.Generator().manual_seed(int(state[0]))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices()
        generator = self._augment_generator()
        cutout_generator = self._augment_generator(stream=1) if self.cutout else None
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            idx = idx.to(self._images.device, non_blocking=True)
            images = self._images.index_select(0, idx).to(self.device, non_blocking=True)
            labels = self._labels.index_select(0, idx).to(self.device, non_blocking=True)
            yield self._transform(images, generator, cutout_generator), labels

    def _transform(self, images: torch.Tensor, generator: torch.Generator,
                   cutout_generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 batch on the device -> augmented, normalised ``dtype`` batch."""
        n = images.shape[0]
        if self.augment == "cifar":
            # Crop and flip the uint8 batch (a quarter of the bytes of a float gather), before
            # normalising, so that the padding is black (0) in pixel space.
            pad = self.crop_padding
            offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
            flips = torch.rand(n, generator=generator) < 0.5
            images = crop_flip(images, pad, offsets[0], offsets[1], flips)
        work = torch.float32 if self.augment == "imagenet" else self.dtype
        x = to_normalized(images, self.data.mean, self.data.std, work)
        if self.augment == "imagenet":
            # Bilinear resampling (border clamped) commutes with the per-channel affine
            # normalisation, so normalising first gives the same result in one fewer pass.
            x = random_resized_crop(x, generator=generator).to(self.dtype)
        if self.cutout:
            x = random_cutout(x, self.cutout, generator=cutout_generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
