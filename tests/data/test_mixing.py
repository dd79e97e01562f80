"""data/mixing.py: mixup and CutMix blend images and one-hot targets by the same weight, draw
each batch's randomness from its own key, and refuse bad input by name."""
import pytest
import torch
import torch.nn.functional as F

from squeezelab.data.mixing import BatchMixer, cutmix, cutmix_box, mixup, one_hot
from squeezelab.data.types import DataError


def _batch(n=6, classes=4, size=8):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, size, size, generator=g)
    labels = torch.arange(n) % classes
    return images, labels


def test_mixup_blends_images_and_targets_by_the_same_weight():
    images, labels = _batch()
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    mixed, targets = mixup(images, labels, 4, 0.3, perm)
    assert torch.allclose(mixed, 0.3 * images + 0.7 * images[perm])
    for i in range(6):
        expected = torch.zeros(4)
        expected[labels[i]] += 0.3
        expected[labels[perm[i]]] += 0.7
        assert torch.allclose(targets[i], expected)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    same, one = mixup(images, labels, 4, 1.0, perm)
    assert torch.equal(same, images) and torch.equal(one, one_hot(labels, 4))


def test_cutmix_pastes_the_partners_box_and_weighs_the_targets_by_its_area():
    images, labels = _batch()
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    box = (2, 6, 1, 5)  # 4 x 4 of 8 x 8: a quarter from the partner
    mixed, targets = cutmix(images, labels, 4, box, perm)
    assert torch.equal(mixed[:, :, 2:6, 1:5], images[perm][:, :, 2:6, 1:5])
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:6, 1:5] = False
    assert torch.equal(mixed[:, :, outside], images[:, :, outside])
    assert torch.allclose(targets, 0.75 * one_hot(labels, 4) + 0.25 * one_hot(labels[perm], 4))
    with pytest.raises(DataError, match=r"box .* does not lie in a 8x8 image"):
        cutmix(images, labels, 4, (0, 9, 0, 4), perm)


def test_the_cutmix_box_is_clipped_at_the_border():
    # lam 0.75: half of each side, 16 x 16 of 32; centred on a corner only a quarter of it stays
    assert cutmix_box(32, 32, 0.75, 16, 16) == (8, 24, 8, 24)
    assert cutmix_box(32, 32, 0.75, 0, 0) == (0, 8, 0, 8)
    assert cutmix_box(32, 32, 0.75, 31, 31) == (23, 32, 23, 32)
    y0, y1, x0, x1 = cutmix_box(32, 32, 1.0, 5, 5)
    assert (y1 - y0) * (x1 - x0) == 0


def test_cross_entropy_of_mixed_targets_is_the_blend_of_the_two_losses():
    """Why the targets can replace the labels: cross-entropy is linear in its target, label
    smoothing included (the mixup paper's loss)."""
    images, labels = _batch()
    perm = torch.tensor([1, 0, 3, 2, 5, 4])
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    _, targets = mixup(images, labels, 4, 0.35, perm)
    for smoothing in (0.0, 0.1):
        mixed = F.cross_entropy(logits, targets, label_smoothing=smoothing)
        blend = 0.35 * F.cross_entropy(logits, labels, label_smoothing=smoothing) + \
            0.65 * F.cross_entropy(logits, labels[perm], label_smoothing=smoothing)
        assert torch.allclose(mixed, blend)


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_each_batch_mixes_the_same_whatever_came_before(mode):
    """The key is (seed, epoch, rank, batch): a resumed epoch mixes its remaining batches as
    an uninterrupted one did, and epochs, batches and ranks mix differently."""
    images, labels = _batch(n=8, size=16)
    mixer = BatchMixer(mode, 4, alpha=1.0, seed=3)
    first = [mixer(images, labels, 1, b) for b in range(4)]
    again = [mixer(images, labels, 1, b) for b in (3, 2, 1, 0)][::-1]
    for (x, t), (y, u) in zip(first, again):
        assert torch.equal(x, y) and torch.equal(t, u)
    others = [mixer(images, labels, 2, 0),
              BatchMixer(mode, 4, seed=3, rank=1)(images, labels, 1, 0),
              BatchMixer(mode, 4, seed=4)(images, labels, 1, 0), first[1]]
    assert all(not torch.equal(first[0][0], x) for x, _ in others)
    for x, t in first:
        assert x.shape == images.shape and torch.allclose(t.sum(1), torch.ones(8))
        assert not torch.equal(x, images)  # prob 1: every batch mixed


def test_mix_prob_leaves_the_other_batches_as_they_are():
    images, labels = _batch(n=8)
    mixer = BatchMixer("mixup", 4, prob=0.5, seed=0)
    plain = [torch.equal(x, images) and torch.equal(t, one_hot(labels, 4))
             for x, t in (mixer(images, labels, 0, b) for b in range(40))]
    assert 10 <= sum(plain) <= 30  # about half, each batch by its own draw


def test_channels_last_batches_stay_channels_last():
    images, labels = _batch(n=4, size=8)
    images = images.contiguous(memory_format=torch.channels_last)
    for mode in ("mixup", "cutmix"):
        x, _ = BatchMixer(mode, 4)(images, labels, 0, 0)
        assert x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="blend"), r"mix must be one of \('mixup', 'cutmix'\), got 'blend'"),
    (dict(alpha=0.0), "mix_alpha must be > 0, got 0.0"),
    (dict(prob=0.0), r"mix_prob must be in \(0, 1\], got 0.0"),
    (dict(prob=1.5), r"mix_prob must be in \(0, 1\], got 1.5"),
    (dict(num_classes=1), "mixing needs at least 2 classes, got 1"),
])
def test_bad_mixer_settings_are_named(kwargs, message):
    with pytest.raises(DataError, match=message):
        BatchMixer(**{"mode": "mixup", "num_classes": 4, **kwargs})


def test_bad_labels_and_weights_are_named():
    images, labels = _batch()
    perm = torch.arange(6)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 3\), got \[0, 3\]"):
        mixup(images, labels, 3, 0.5, perm)
    with pytest.raises(DataError, match="labels must be an int64 .N,. tensor, got torch.int32"):
        mixup(images, labels.int(), 4, 0.5, perm)
    with pytest.raises(DataError, match=r"lam must be in \[0, 1\], got 1.5"):
        mixup(images, labels, 4, 1.5, perm)
    with pytest.raises(DataError, match="needs 6 labels and a permutation of 6, got 5 labels"):
        mixup(images, labels[:5], 4, 0.5, perm)
    with pytest.raises(DataError, match="images must be a floating"):
        mixup(images.to(torch.uint8), labels, 4, 0.5, perm)
