"""Tests for the batched augmentations: exact crops and flips on hand-made tensors, the affine
map of the resized crop, the random-resized-crop box sampler (Szegedy et al. 2014, arXiv
1409.4842), determinism under a seed, and normalisation arithmetic."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from squeezelab.data import (
    DataError,
    crop_flip,
    cutout,
    normalize,
    random_crop_flip,
    random_cutout,
    random_flip,
    random_resized_crop,
    resized_crop,
    sample_resized_crop_boxes,
    to_float,
    to_normalized,
)


def _batch(n=4, h=32, w=32, seed=0):
    return torch.randint(0, 256, (n, 3, h, w), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def test_crop_with_offset_zero_equals_padded_slice():
    x = _batch()
    zeros = torch.zeros(4, dtype=torch.int64)
    out = crop_flip(x, 4, zeros, zeros)
    assert torch.equal(out, F.pad(x, (4, 4, 4, 4))[:, :, 0:32, 0:32])
    assert torch.equal(out[:, :, 4:, 4:], x[:, :, :28, :28])
    assert int(out[:, :, :4].abs().sum()) == 0 and int(out[:, :, :, :4].abs().sum()) == 0


def test_per_sample_offsets_and_flip_are_exact():
    x = _batch()
    oy = torch.tensor([4, 0, 8, 3])
    ox = torch.tensor([4, 8, 0, 5])
    flip = torch.tensor([False, True, True, False])
    out = crop_flip(x, 4, oy, ox, flip)
    padded = F.pad(x, (4, 4, 4, 4))
    assert torch.equal(out[0], x[0])  # centred crop = identity
    for i in range(4):
        expected = padded[i, :, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
        assert torch.equal(out[i], expected.flip(-1) if flip[i] else expected)
    # Flip of the uncropped batch is exact too.
    centred = torch.full((4,), 4)
    assert torch.equal(crop_flip(x, 4, centred, centred, torch.ones(4, dtype=torch.bool)),
                       x.flip(-1))


def test_crop_flip_errors():
    x = _batch(2)
    with pytest.raises(DataError, match=r"offsets_x must be in \[0, 8\] for padding 4, "
                                        r"got values in \[0, 9\]"):
        crop_flip(x, 4, torch.tensor([0, 1]), torch.tensor([0, 9]))
    with pytest.raises(DataError, match=r"offsets_y must have shape \(2,\), got \(3,\)"):
        crop_flip(x, 4, torch.zeros(3), torch.zeros(2))
    with pytest.raises(DataError,
                       match=r"images must be a \(N, C, H, W\) tensor, got \(3, 32, 32\)"):
        crop_flip(x[0], 4, torch.zeros(1), torch.zeros(1))


def test_random_crop_flip_is_seeded_and_draws_valid_crops():
    x = _batch(64)
    a = random_crop_flip(x, generator=torch.Generator().manual_seed(7))
    b = random_crop_flip(x, generator=torch.Generator().manual_seed(7))
    c = random_crop_flip(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in (0, 17, 63):  # each output is one of the 9 x 9 x 2 candidate crops of its input
        candidates = [padded[i, :, y:y + 32, s:s + 32] for y in range(9) for s in range(9)]
        candidates += [t.flip(-1) for t in candidates]
        assert any(torch.equal(a[i], t) for t in candidates)
    flips = random_flip(x, generator=torch.Generator().manual_seed(1))
    flipped = [bool(torch.equal(flips[i], x[i].flip(-1))) for i in range(64)]
    kept = [bool(torch.equal(flips[i], x[i])) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54


def test_resized_crop_full_box_is_identity_and_integer_box_is_slice():
    x = to_float(_batch(2, 12, 10))
    full = torch.tensor([[0, 0, 10, 12], [0, 0, 10, 12]])
    assert torch.allclose(resized_crop(x, full, (12, 10)), x, atol=1e-5)
    box = torch.tensor([[2, 3, 5, 4], [0, 7, 10, 5]])
    out = resized_crop(x, box, (4, 5), flip=torch.tensor([False, False]))
    assert torch.allclose(out[0], x[0, :, 3:7, 2:7], atol=1e-5)
    flipped = resized_crop(x, box[1:].repeat(2, 1), (5, 10), flip=torch.tensor([True, False]))
    assert torch.allclose(flipped[0], x[0, :, 7:12, 0:10].flip(-1), atol=1e-5)
    assert torch.allclose(flipped[1], x[1, :, 7:12, 0:10], atol=1e-5)


def test_resized_crop_upsamples_a_2x2_box_bilinearly():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).expand(1, 3, 2, 2)
    out = resized_crop(x, torch.tensor([[0, 0, 2, 2]]), (4, 4))
    # align_corners=False: output centres at input coords -0.25, 0.25, 0.75, 1.25 (clamped ends).
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert torch.allclose(out[0, 0, :, 0], torch.tensor([0.0, 0.5, 1.5, 2.0]))


def test_resized_crop_boxes_fit_and_follow_scale_and_ratio():
    g = torch.Generator().manual_seed(0)
    boxes = sample_resized_crop_boxes(2000, 32, 48, generator=g)
    x0, y0, w, h = boxes.unbind(1)
    assert bool((boxes == boxes.round()).all())
    assert bool((x0 >= 0).all() and (y0 >= 0).all()
                and (x0 + w <= 48).all() and (y0 + h <= 32).all())
    area = w * h / (32 * 48)
    # Rounding of w and h widens the ranges a little at these small sizes.
    assert float(area.min()) > 0.05 and float(area.max()) <= 1.0
    ratio = w / h
    assert float(ratio.min()) > 0.6 and float(ratio.max()) < 1.6
    assert torch.equal(boxes, sample_resized_crop_boxes(2000, 32, 48,
                                                        generator=torch.Generator().manual_seed(0)))


def test_resized_crop_fallback_is_the_central_box():
    # No 10:1 box with area <= the image fits a square image: the fallback is the central
    # full-width box of height round(32 / 10) = 3, at y0 = floor((32 - 3) / 2) = 14.
    boxes = sample_resized_crop_boxes(3, 32, 32, scale=(0.5, 1.0), ratio=(10.0, 20.0),
                                      generator=torch.Generator().manual_seed(0))
    assert boxes.tolist() == [[0.0, 14.0, 32.0, 3.0]] * 3
    with pytest.raises(DataError,
                       match=r"scale must satisfy 0 < min <= max <= 1, got \(0.5, 1.5\)"):
        sample_resized_crop_boxes(1, 8, 8, scale=(0.5, 1.5))


def test_random_resized_crop_is_seeded():
    x = to_float(_batch(8, 20, 20))
    a = random_resized_crop(x, (8, 8), generator=torch.Generator().manual_seed(3))
    b = random_resized_crop(x, (8, 8), generator=torch.Generator().manual_seed(3))
    assert a.shape == (8, 3, 8, 8) and torch.equal(a, b)
    assert not torch.equal(
        a, random_resized_crop(x, (8, 8), generator=torch.Generator().manual_seed(4)))
    assert random_resized_crop(x, generator=torch.Generator().manual_seed(3)).shape == x.shape
    with pytest.raises(DataError, match="resized_crop expects floating images, got torch.uint8"):
        random_resized_crop(_batch(2))


def test_to_float_and_normalize_arithmetic():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).repeat(1, 1, 1, 2)
    f = to_float(x)
    assert f.dtype == torch.float32 and f[0, :, 0, 0].tolist() == pytest.approx([0.0, 0.2, 1.0])
    out = normalize(f, (0.5, 0.2, 0.5), (0.25, 0.1, 0.5))
    assert out[0, :, 0, 1].tolist() == pytest.approx([-2.0, 0.0, 1.0])
    assert to_float(x, torch.float64).dtype == torch.float64
    with pytest.raises(DataError, match="mean and std need 3 values .* got 2 and 3"):
        normalize(f, (0.5, 0.5), (1, 1, 1))
    with pytest.raises(DataError, match=r"std values must be positive, got \(1, 0, 1\)"):
        normalize(f, (0.5, 0.5, 0.5), (1, 0, 1))
    with pytest.raises(DataError, match="to_float expects uint8 images, got torch.float32"):
        to_float(f)
    with pytest.raises(DataError, match="normalize expects floating images"):
        normalize(x, (0.5,) * 3, (1,) * 3)


def test_fused_normalisation_matches_the_two_step_one():
    x = _batch(3, 5, 7)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    fused = to_normalized(x, mean, std)
    assert fused.dtype == torch.float32
    assert torch.allclose(fused, normalize(to_float(x), mean, std), atol=1e-5)
    assert to_normalized(x, mean, std, torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(DataError, match="to_normalized expects uint8 images, got torch.float32"):
        to_normalized(x.float(), mean, std)


def test_cutout_zeroes_the_square_clipped_at_the_border():
    images = torch.ones(2, 3, 6, 6)
    out = cutout(images, 4, torch.tensor([3, 1]), torch.tensor([3, 4]))
    # image 0: centre (3, 3), rows and columns 1..4; image 1: rows -1..2 -> 0..2, columns 2..5
    want = torch.ones(2, 3, 6, 6)
    want[0, :, 1:5, 1:5] = 0
    want[1, :, 0:3, 2:6] = 0
    assert torch.equal(out, want) and torch.equal(images, torch.ones(2, 3, 6, 6))  # a copy
    odd = cutout(torch.ones(1, 1, 5, 5), 3, torch.tensor([2]), torch.tensor([2]))
    assert odd[0, 0].eq(0).nonzero().tolist() == [[i, j] for i in (1, 2, 3) for j in (1, 2, 3)]


def test_random_cutout_is_seeded_and_cuts_between_a_quarter_and_a_whole_square():
    x = torch.randn(64, 3, 32, 32)
    a = random_cutout(x, 16, generator=torch.Generator().manual_seed(1))
    b = random_cutout(x, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    zeroed = (a == 0).all(1).flatten(1).sum(1)  # pixels cut per image, all channels at once
    assert int(zeroed.min()) >= 8 * 8 and int(zeroed.max()) == 16 * 16  # a corner, a whole one
    assert torch.equal(a[a != 0], x[a != 0])


@pytest.mark.parametrize("args, message", [
    ((0, [0], [0]), "cutout size must be a positive int, got 0"),
    ((4, [0, 1], [0]), r"centers_y must have shape \(1,\)"),
    ((4, [6], [0]), r"centers_y must be in \[0, 6\), got values in \[6, 6\]"),
    ((4, [0], [-1]), r"centers_x must be in \[0, 6\)"),
])
def test_cutout_errors(args, message):
    size, cy, cx = args
    with pytest.raises(DataError, match=message):
        cutout(torch.ones(1, 3, 6, 6), size, torch.tensor(cy), torch.tensor(cx))
