"""Fixtures for the data tests: tiny class-folder trees copied from the shared CIFAR-10 JPEG copy,
and tiny CIFAR archives written in the official python format (Krizhevsky 2009)."""
from __future__ import annotations

from pathlib import Path

import pytest
from cifar_fixtures import copy_tree, write_cifar_archive  # noqa: F401  (the tests import it)


@pytest.fixture
def jpeg_tree(tmp_path: Path) -> Path:
    """A class-folder tree with 3 train and 2 test CIFAR-10 JPEGs per class (real data)."""
    return copy_tree(tmp_path / "cifar10-mini", 3, 2)
