"""Tests for ``load_split``'s arguments and helpers: the balanced ``limit`` subset, the default
CIFAR-10 source resolution, source errors, and the ``ImageTensors`` container itself."""
from __future__ import annotations

import pytest
import torch
from cifar_fixtures import copy_tree

from squeezelab.data import (
    DataError,
    ImageTensors,
    load_split,
    resolve_default_cifar10,
    sources,
)
from squeezelab.data.sources import balanced_indices


def _tensors(n: int = 6, classes=("a", "b", "c")) -> ImageTensors:
    images = torch.arange(n * 3 * 2 * 2, dtype=torch.int64).remainder(256).to(torch.uint8)
    return ImageTensors(images=images.view(n, 3, 2, 2), labels=torch.arange(n) % len(classes),
                        classes=list(classes), source="test", mean=(0.5, 0.5, 0.5),
                        std=(0.25, 0.25, 0.25))


def test_balanced_indices_counts_and_determinism():
    labels = torch.tensor([0] * 10 + [1] * 4 + [2] * 7)
    chosen = balanced_indices(labels, 3, 10, seed=0)
    assert torch.bincount(labels[chosen], minlength=3).tolist() == [3, 3, 3]
    assert chosen.tolist() == sorted(set(chosen.tolist()))  # ascending, no repeats
    assert torch.equal(chosen, balanced_indices(labels, 3, 10, seed=0))
    others = {tuple(balanced_indices(labels, 3, 10, seed=s).tolist()) for s in range(1, 8)}
    assert len(others) > 1  # the seed changes the choice
    assert balanced_indices(labels, 3, 12).numel() == 12  # 4 per class: class 1 is all used


def test_balanced_indices_errors():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    with pytest.raises(DataError,
                       match=r"limit must be at least the number of classes \(3\) .* got 2"):
        balanced_indices(labels, 3, 2)
    with pytest.raises(DataError,
                       match="limit=6 needs 2 images per class, but class 'b' has only 1"):
        balanced_indices(labels, 3, 6, classes=["a", "b", "c"])
    with pytest.raises(DataError, match="limit must be an int, got 2.5"):
        balanced_indices(labels, 3, 2.5)


def test_limit_on_real_folder_split(jpeg_tree, tmp_path):
    full = load_split(str(jpeg_tree), "train", cache_dir=tmp_path / "c", progress=False)
    sub = load_split(str(jpeg_tree), "train", cache_dir=tmp_path / "c", progress=False,
                     limit=25, seed=3)
    assert len(sub) == 20 and torch.bincount(sub.labels).tolist() == [2] * 10
    assert (sub.mean, sub.std, sub.classes) == (full.mean, full.std, full.classes)
    index = balanced_indices(full.labels, 10, 25, seed=3)
    assert torch.equal(sub.images, full.images[index])


def test_resolve_default_prefers_env_then_shared_copy(tmp_path, monkeypatch):
    tree = copy_tree(tmp_path / "mine", 1, 1)
    monkeypatch.setenv("SQUEEZELAB_CIFAR10_DIR", str(tree))
    assert resolve_default_cifar10() == str(tree.resolve())
    monkeypatch.setenv("SQUEEZELAB_CIFAR10_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataError, match=r"\$SQUEEZELAB_CIFAR10_DIR is .*missing.*no train/ folder"):
        resolve_default_cifar10()
    monkeypatch.delenv("SQUEEZELAB_CIFAR10_DIR")
    project = tmp_path / "work" / "main"
    shared = tmp_path / "work" / "shared" / "data" / "cifar10-jpeg"
    (shared / "train").mkdir(parents=True)
    project.mkdir(parents=True)
    monkeypatch.setattr(sources, "PROJECT_ROOT", project)
    monkeypatch.chdir(tmp_path)
    assert resolve_default_cifar10() == str(shared.resolve())
    monkeypatch.setattr(sources, "PROJECT_ROOT", tmp_path / "elsewhere")
    assert resolve_default_cifar10() == "cifar10"
    monkeypatch.chdir(project)  # found relative to the current directory too
    assert resolve_default_cifar10() == str(shared.resolve())


def test_source_errors(tmp_path):
    with pytest.raises(DataError, match="source must be 'cifar10', 'cifar100' or an existing "
                                        "class-folder root, got 'imagenet' \\(no such folder\\)"):
        load_split("imagenet", cache_dir=tmp_path)
    with pytest.raises(DataError, match="root applies to 'cifar10'/'cifar100' only"):
        load_split(str(tmp_path), root=tmp_path)
    with pytest.raises(DataError, match="source must be .* got 3"):
        load_split(3)


def test_image_tensors_basics_and_subset():
    data = _tensors()
    assert len(data) == 6 and data.num_classes == 3 and data.image_size == (2, 2)
    sub = data.subset([4, 1])
    assert torch.equal(sub.images, data.images[[4, 1]]) and sub.labels.tolist() == [1, 1]
    assert ((sub.classes, sub.mean, sub.std, sub.source)
            == (data.classes, data.mean, data.std, "test"))
    with pytest.raises(DataError, match=r"indices must be in \[-6, 5\], got values in \[0, 6\]"):
        data.subset([0, 6])


@pytest.mark.parametrize("change, message", [
    ({"images": torch.zeros(2, 3, 4, 4)},
     "images must be a uint8 tensor, got tensor of dtype torch.float32"),
    ({"images": torch.zeros(2, 1, 4, 4, dtype=torch.uint8)},
     r"images must have shape \(N, 3, H, W\), got \(2, 1, 4, 4\)"),
    ({"labels": torch.zeros(2, dtype=torch.int32)}, "labels must be an int64 tensor"),
    ({"labels": torch.zeros(3, dtype=torch.int64)}, r"labels must have shape \(2,\)"),
    ({"labels": torch.tensor([0, 2])}, r"labels must be in \[0, 1\], got values in \[0, 2\]"),
    ({"classes": ["a", "a"]}, "class names must be unique"),
    ({"mean": (0.5, 0.5)}, r"mean must have 3 values \(R, G, B\), got 2"),
    ({"std": (0.0, 0.2, 0.2)}, r"std values must be in \(0, 1\]"),
    ({"mean": (128, 0.5, 0.5)}, r"mean values must be in \[0, 1\] \(0..1 pixel units\)"),
])
def test_image_tensors_validation(change, message):
    kwargs = dict(images=torch.zeros(2, 3, 4, 4, dtype=torch.uint8), labels=torch.tensor([0, 1]),
                  classes=["a", "b"], source="x", mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    kwargs.update(change)
    with pytest.raises(DataError, match=message):
        ImageTensors(**kwargs)
