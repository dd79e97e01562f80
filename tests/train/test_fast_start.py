"""Progressive resizing and the whitening-initialised stem (train/fast_start.py): the size of
each epoch, resized batches, filters that whiten real patches exactly, and a run that uses
both and learns on real images."""
import pytest
import torch
import torch.nn.functional as F
from model_configs import SMALL

from squeezelab.models import create_model
from squeezelab.train import ConfigError, TrainConfig, train
from squeezelab.train.fast_start import (
    resize_batch,
    size_for_epoch,
    stem_conv,
    whiten_stem_,
    whitening_filters,
    whitening_sample,
)


def test_each_size_takes_an_equal_share_of_the_epochs_in_order():
    assert [size_for_epoch([24, 28, 32], e, 6) for e in range(6)] == [24, 24, 28, 28, 32, 32]
    assert [size_for_epoch([16, 32], e, 5) for e in range(5)] == [16, 16, 16, 32, 32]
    assert size_for_epoch(None, 3, 10) is None and size_for_epoch([], 0, 1) is None
    with pytest.raises(ConfigError, match="progressive_sizes must be null or a non-empty list"):
        TrainConfig(progressive_sizes=[24, 4])
    with pytest.raises(ConfigError, match="stem_init must be one of"):
        TrainConfig(stem_init="pca")


def test_resized_batches_keep_their_layout_and_a_constant_image_stays_constant():
    images = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    small = resize_batch(images, 24)
    assert small.shape == (4, 3, 24, 24)
    assert small.is_contiguous(memory_format=torch.channels_last)
    assert resize_batch(images, 32) is images and resize_batch(images, None) is images
    flat = torch.full((2, 3, 32, 32), 0.7)
    torch.testing.assert_close(resize_batch(flat, 16), torch.full((2, 3, 16, 16), 0.7))


def test_the_whitening_filters_decorrelate_real_patches(cifar_small):
    """Over the patches the filters were fitted on, the outputs of the d positive filters have
    covariance diag(lambda / (lambda + eps)): the identity, as the eigenvalues dwarf eps."""
    images = whitening_sample(cifar_small[0], count=400)
    filters = whitening_filters(images, 3, eps=1e-9)
    assert filters.shape == (54, 3, 3, 3)
    torch.testing.assert_close(filters[1::2], -filters[0::2])
    out = F.conv2d(images.double(), filters[0::2].double())  # (N, 27, 30, 30), no padding
    flat = out.permute(1, 0, 2, 3).reshape(27, -1)
    cov = torch.cov(flat)
    assert (cov.diagonal() - 1).abs().max() < 0.01
    assert (cov - torch.diag(cov.diagonal())).abs().max() < 1e-3


def test_whiten_stem_sets_the_first_filters_and_keeps_the_rest(cifar_small):
    torch.manual_seed(0)
    model = create_model("squeezenet_cifar", **SMALL)
    conv = stem_conv(model)
    before = conv.weight.detach().clone()
    images = whitening_sample(cifar_small[0], count=200)
    n = whiten_stem_(model, images)
    assert n == min(conv.out_channels, 54)
    torch.testing.assert_close(conv.weight[:n], whitening_filters(images, 3)[:n])
    assert torch.equal(conv.weight[n:], before[n:])
    with pytest.raises(ValueError, match="images have 1 channels, the stem takes 3"):
        whiten_stem_(model, images[:, :1])


def test_a_run_with_progressive_sizes_and_a_whitened_stem_learns(tmp_path, cifar_small):
    cfg = TrainConfig(model="squeezenet_cifar", model_args=SMALL, epochs=2, batch_size=32,
                      precision="fp32", channels_last=False, out_dir=str(tmp_path),
                      run_name="fast", progress=False, progressive_sizes=[24, 32],
                      stem_init="whitening")
    result = train(cfg, data=cifar_small)
    # 300 test images: chance is 0.10 with a standard deviation of 0.017
    assert result.final["test_top1"] > 0.18, result.history
    assert result.history[0]["images_per_s"] > 0
