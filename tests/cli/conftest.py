"""Fixtures of the command-line tests."""
import pytest
from trained_checkpoint import train_tiny_checkpoint


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory, cifar_tree, cifar_small) -> str:
    """A tiny SqueezeNet trained one epoch on real images (``trained_checkpoint.py``): what the
    prune, quantize and compress commands' tests start from. Tests read it, never change it."""
    return train_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), cifar_tree, cifar_small)
