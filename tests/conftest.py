"""Fixtures shared by every test folder: small real CIFAR-10 subsets decoded once per session."""
from __future__ import annotations

import pytest
from cifar_fixtures import copy_tree


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
