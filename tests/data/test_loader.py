"""Tests for BatchLoader: DDP shards disjoint and covering with equal batch counts, seeding by
seed + epoch, exact normalisation, augmentation consistent with the labels, and argument errors."""
from __future__ import annotations

import pytest
import torch

from squeezelab.data import BatchLoader, DataError, ImageTensors


def _data(n: int = 50, num_classes: int = 5, size: int = 8) -> ImageTensors:
    # Image i is constant per channel with value i in channel 0: the label can be read back from
    # the pixels, which lets the tests check that augmentation never separates image and label.
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    images[:, 0] = torch.arange(n, dtype=torch.uint8).view(n, 1, 1)
    images[:, 1] = 100
    images[:, 2] = 200
    return ImageTensors(images=images, labels=torch.arange(n) % num_classes,
                        classes=[f"c{i}" for i in range(num_classes)], source="synthetic",
                        mean=(0.2, 0.4, 0.6), std=(0.1, 0.2, 0.25))


@pytest.mark.parametrize("drop_last", [False, True])
def test_ddp_shards_are_disjoint_and_cover_the_epoch(drop_last):
    data = _data(50)
    loaders = [BatchLoader(data, 4, train=True, drop_last=drop_last, rank=r, world_size=3, seed=5)
               for r in range(3)]
    for loader in loaders:
        loader.set_epoch(2)
    shards = [loader.indices().tolist() for loader in loaders]
    assert len({len(s) for s in shards}) == 1 and len({len(loader) for loader in loaders}) == 1
    everything = sum(shards, [])
    if drop_last:  # 16 each, all different, 2 of 50 dropped this epoch
        assert len(shards[0]) == 16 and len(set(everything)) == 48 and len(loaders[0]) == 4
    else:  # 17 each: the permutation wraps around by one sample to even the shards
        assert len(shards[0]) == 17 and set(everything) == set(range(50)) and len(loaders[0]) == 5
        assert len(everything) - len(set(everything)) == 1
    # The ranks cut one shared permutation: their interleaving is that permutation.
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(5 + 2)).tolist()
    assert ([shards[i % 3][i // 3] for i in range(len(everything))]
            == (perm + perm)[:len(everything)])


def test_batches_follow_the_shard_and_last_batch_is_kept_when_not_dropping():
    data = _data(50)
    loader = BatchLoader(data, 8, train=True, drop_last=False, rank=1, world_size=2, seed=1)
    loader.set_epoch(4)
    batches = list(loader)
    assert len(batches) == len(loader) == 4  # 25 samples: 8 + 8 + 8 + 1
    assert [b[1].numel() for b in batches] == [8, 8, 8, 1]
    indices = loader.indices()
    seen = torch.cat([images[:, 0, 0, 0] for images, _ in batches])
    expected = (indices.float() / 255 - 0.2) / 0.1
    assert torch.allclose(seen, expected, atol=1e-5)
    assert torch.equal(torch.cat([labels for _, labels in batches]), data.labels[indices])


def test_epochs_and_seeds_change_the_order_eval_keeps_it():
    data = _data(40)
    loader = BatchLoader(data, 10, train=True, seed=0)
    first = loader.indices()
    loader.set_epoch(1)
    assert not torch.equal(first, loader.indices())
    loader.set_epoch(0)
    assert torch.equal(first, loader.indices())
    assert not torch.equal(first, BatchLoader(data, 10, train=True, seed=1).indices())
    assert torch.equal(first, torch.randperm(40, generator=torch.Generator().manual_seed(0)))
    evaluation = BatchLoader(data, 16, train=False)
    assert evaluation.indices().tolist() == list(range(40)) and len(evaluation) == 3


def test_eval_batches_are_exactly_normalised():
    data = _data(6)
    images, labels = next(iter(BatchLoader(data, 6, train=False)))
    expected = (data.images.float() / 255 - torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)) \
        / torch.tensor([0.1, 0.2, 0.25]).view(1, 3, 1, 1)
    assert images.dtype == torch.float32 and torch.allclose(images, expected, atol=1e-6)
    assert labels.dtype == torch.int64 and torch.equal(labels, data.labels)
    assert images[0, 1, 0, 0].item() == pytest.approx((100 / 255 - 0.4) / 0.2, abs=1e-6)


@pytest.mark.parametrize("augment", ["cifar", "imagenet"])
def test_augmented_batches_are_seeded_and_keep_labels_with_images(augment):
    data = _data(32, size=16)
    a = BatchLoader(data, 8, train=True, augment=augment, seed=3)
    b = BatchLoader(data, 8, train=True, augment=augment, seed=3)
    batches_a, batches_b = list(a), list(b)
    for (xa, ya), (xb, yb) in zip(batches_a, batches_b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    a.set_epoch(1)
    assert not torch.equal(next(iter(a))[0], batches_a[0][0])
    mean, std = torch.tensor([0.2, 0.4, 0.6]), torch.tensor([0.1, 0.2, 0.25])
    for images, labels in batches_a:
        raw = (images * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)) * 255
        # Centre pixel: never padding (pad 4 of 16) and a constant image stays constant when
        # resampled, so channel 0 still reads the image's index, which gives its label.
        index = raw[:, 0, 8, 8].round().long()
        assert torch.equal(index % 5, labels)
        assert torch.allclose(raw[:, 1, 8, 8], torch.full((8,), 100.0), atol=1e-3)


def test_cifar_augmentation_pads_with_zeros():
    data = _data(64, size=8)
    images, _ = next(iter(BatchLoader(data, 64, train=True, augment="cifar", seed=0)))
    raw_green = ((images[:, 1] * 0.2 + 0.4) * 255).round()
    assert set(raw_green.unique().tolist()) == {0.0, 100.0}
    # A crop shifted by (dy, dx) keeps a (8 - |dy|) x (8 - |dx|) block of the image and fills the
    # rest with the zero padding; |dy|, |dx| <= 4.
    allowed = {(8 - a) * (8 - b) for a in range(5) for b in range(5)}
    kept = (raw_green == 100).flatten(1).sum(1).tolist()
    assert set(kept) <= allowed and min(kept) < 64


@pytest.mark.parametrize("pad", [0, 2])
def test_crop_padding_bounds_the_shift(pad):
    data = _data(64, size=8)
    images, _ = next(iter(BatchLoader(data, 64, train=True, augment="cifar", seed=0,
                                      crop_padding=pad)))
    raw_green = ((images[:, 1] * 0.2 + 0.4) * 255).round()
    # shifts of at most `pad` pixels: every image keeps at least (8 - pad)^2 of its pixels, and
    # with 64 images some shift reaches the bound
    kept = (raw_green == 100).flatten(1).sum(1)
    assert kept.min().item() == (8 - pad) ** 2
    assert set(kept.tolist()) <= {(8 - a) * (8 - b) for a in range(pad + 1)
                                  for b in range(pad + 1)}


def test_cutout_zeroes_a_square_after_the_same_crops_and_flips():
    data = _data(64, size=16)
    plain = list(BatchLoader(data, 16, train=True, augment="cifar", seed=2))
    cut = list(BatchLoader(data, 16, train=True, augment="cifar", seed=2, cutout=6))
    for (x, y), (xc, yc) in zip(plain, cut):
        assert torch.equal(y, yc)
        # every pixel is the plain batch's, or zero in all channels (after normalisation: the
        # data set's mean colour); at least a corner's 3 x 3 of each image is cut
        cut_pixels = (xc == 0).all(1, keepdim=True).expand_as(xc)
        assert torch.equal(xc[~cut_pixels], x[~cut_pixels])
        assert ((xc == 0).all(1).flatten(1).sum(1) >= 9).all()
        assert not torch.equal(xc, x)


def test_dtype_and_channels_last():
    data = _data(4)
    images, _ = next(iter(BatchLoader(data, 4, train=False, dtype=torch.bfloat16,
                                      channels_last=True)))
    assert images.dtype == torch.bfloat16
    assert images.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
    ({"augment": "autoaugment"},
     r"augment must be one of \('cifar', 'imagenet'\) or None, got 'autoaugment'"),
    ({"augment": "cifar", "train": False}, "augment='cifar' is for training loaders"),
    ({"rank": 2, "world_size": 2}, r"rank must be in \[0, world_size\)"),
    ({"batch_size": 30, "world_size": 2}, "batch_size 30 is larger than the 25 samples per "
     r"rank: a training epoch would have no full batch; lower --batch-size \(batch_size: in a "
     r"recipe\)"),
    ({"dtype": torch.int32}, "dtype must be a floating dtype, got torch.int32"),
    ({"cutout": -2}, r"cutout must be a non-negative int \(pixels\), got -2"),
    ({"cutout": 8, "train": False}, "cutout=8 is for training loaders"),
    ({"crop_padding": -1}, r"crop_padding must be a non-negative int \(pixels\), got -1"),
])
def test_loader_argument_errors(kwargs, message):
    arguments = {"batch_size": 4, "train": True}
    arguments.update(kwargs)
    with pytest.raises(DataError, match=message):
        BatchLoader(_data(50), **arguments)
    with pytest.raises(DataError, match="epoch must be a non-negative int, got -1"):
        BatchLoader(_data(50), 4, train=True).set_epoch(-1)
