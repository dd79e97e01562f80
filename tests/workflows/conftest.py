"""What the workflow tests share: a tiny slice of real CIFAR-10 and a tiny untrained
SqueezeNet checkpoint to start from."""
import pytest
import torch
from model_configs import TINY

from squeezelab.checkpoint import save_checkpoint
from squeezelab.models import create_model


@pytest.fixture(scope="module")
def data(cifar_small):
    """100 training and 50 test images of the shared JPEGs."""
    train, test = cifar_small
    return train.subset(torch.arange(0, 1000, 10)), test.subset(torch.arange(0, 300, 6))


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """``make(model_args=TINY, **meta)``: a seeded tiny squeezenet_cifar saved as
    ``tmp_path/src`` with a preprocessing record of 32-pixel images and ``meta``."""
    def make(model_args=TINY, **meta):
        torch.manual_seed(0)
        model = create_model("squeezenet_cifar", num_classes=10, **model_args)
        return save_checkpoint(tmp_path / "src", model, meta={"image_size": [32, 32], **meta})
    return make
