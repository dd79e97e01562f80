"""Multi-crop testing's crops: exactly the expected slices, counts and mirror images."""
import pytest
import torch

from squeezelab.data.crops import (
    center_crop,
    five_crop_offsets,
    googlenet_crops,
    multi_crops,
    ten_crops,
)


def numbered(n=2, c=3, h=6, w=7):
    """Every pixel a different number, so a crop is identified by its values."""
    return torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w)


def test_ten_crops_are_the_corners_the_centre_and_their_mirrors():
    x = numbered(h=6, w=7)
    crops = list(ten_crops(x, 4))
    assert len(crops) == 10
    # top-left, top-right, bottom-left, bottom-right, centre (floor((6-4)/2), floor((7-4)/2))
    expected = [x[..., 0:4, 0:4], x[..., 0:4, 3:7], x[..., 2:6, 0:4], x[..., 2:6, 3:7],
                x[..., 1:5, 1:5]]
    assert five_crop_offsets(6, 7, 4) == [(0, 0), (0, 3), (2, 0), (2, 3), (1, 1)]
    for got, want in zip(crops[:5], expected):
        assert torch.equal(got, want)
    for got, want in zip(crops[5:], expected):
        assert torch.equal(got, want.flip(-1))
    assert torch.equal(center_crop(x, 4), expected[4])
    # crops of the whole image are the image (and its mirror) five times each
    same = list(ten_crops(x[..., :6], 6))
    assert all(torch.equal(c, x[..., :6]) for c in same[:5])


def test_googlenet_takes_144_crops_at_four_scales():
    x = torch.rand(2, 3, 32, 32)
    crops = list(googlenet_crops(x, 32))
    assert len(crops) == 144
    assert all(c.shape == (2, 3, 32, 32) for c in crops)
    # every second crop is the mirror of the one before
    assert all(torch.equal(crops[i + 1], crops[i].flip(-1)) for i in range(0, 144, 2))
    # the first scale's shorter side is round(256 * 32 / 224) = 37: its top-left crop is the
    # top-left 32x32 of the image resized to 37x37; its sixth view is the whole square resized
    resized = torch.nn.functional.interpolate(x, size=(37, 37), mode="bilinear",
                                              align_corners=False, antialias=True)
    assert torch.allclose(crops[0], resized[..., :32, :32])
    assert torch.allclose(crops[10], torch.nn.functional.interpolate(
        resized, size=(32, 32), mode="bilinear", align_corners=False, antialias=True))
    # a landscape image: three different squares (left, centre, right) of side = its height
    wide = numbered(n=1, c=1, h=8, w=16)
    sq = list(googlenet_crops(wide, 8))
    # scale 256 for 8-px crops: shorter side round(256 * 8 / 224) = 9, longer 18
    r = torch.nn.functional.interpolate(wide, size=(9, 18), mode="bilinear",
                                        align_corners=False, antialias=True)
    assert torch.allclose(sq[0], r[..., 0:8, 0:8])  # left square, top-left
    assert torch.allclose(sq[12], r[..., 0:8, 4:12])  # centre square starts at (18-9)//2 = 4
    assert torch.allclose(sq[24], r[..., 0:8, 9:17])  # right square starts at 9


def test_multi_crops_pads_with_the_value_given_then_crops():
    x = torch.ones(1, 2, 4, 4)
    crops = list(multi_crops(x, 10, 4, pad=1, pad_value=torch.tensor([-1.0, -2.0])))
    assert len(crops) == 10
    top_left = crops[0]
    assert top_left[0, 0, 0, 0] == -1 and top_left[0, 1, 0, 0] == -2  # the padding
    assert torch.equal(top_left[..., 1:, 1:], torch.ones(1, 2, 3, 3))
    assert torch.equal(crops[4], x)  # the centre crop of the padded image is the image
    (only,) = multi_crops(x, 1)  # one crop at the image size: the image itself
    assert torch.equal(only, x)
    with pytest.raises(ValueError, match="crops must be one of"):
        list(multi_crops(x, 5))
    with pytest.raises(ValueError, match="crop size 5 is larger than the 4x4 images"):
        list(multi_crops(x, 10, 5))
    with pytest.raises(ValueError, match="pad_value has 3 values for 2 channels"):
        list(multi_crops(x, 10, 4, pad=1, pad_value=torch.zeros(3)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) batch"):
        list(multi_crops(torch.ones(2, 4, 4), 10, 4))
