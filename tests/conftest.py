"""Fixtures shared by every test folder: small real CIFAR-10 subsets decoded once per session."""
from __future__ import annotations

import pytest
import torch
from cifar_fixtures import copy_tree


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """Test models are tiny: a second OpenMP thread gains little, and on a busy 2-core machine
    threads waiting for each other made training tests up to 10x slower. One thread for the
    whole session also makes every test's timing independent of test order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cifar_tree(tmp_path_factory):
    """A class-folder tree of 100 train and 30 test real CIFAR-10 JPEGs per class."""
    return copy_tree(tmp_path_factory.mktemp("cifar10-small"), 100, 30)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A decode cache private to this test session (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def cifar_small(cifar_tree, cache_dir):
    """(train, test) ImageTensors: 1,000 train and 300 test real images, 10 classes."""
    from squeezelab.data import load_split

    train = load_split(str(cifar_tree), "train", cache_dir=cache_dir, progress=False)
    test = load_split(str(cifar_tree), "test", cache_dir=cache_dir, progress=False)
    return train, test


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, cache_dir):
    # Any code path that decodes without an explicit cache_dir writes here, not to ~/.cache.
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(cache_dir))
