"""Fixtures of the training tests."""
import pytest
import torch


@pytest.fixture(scope="session")
def cifar_tiny(cifar_small):
    """500 train / 100 test images: enough for the bookkeeping tests, and fast."""
    train_data, test_data = cifar_small
    return train_data.subset(torch.arange(0, 1000, 2)), test_data.subset(torch.arange(0, 300, 3))
