"""Tests for the official-format CIFAR reader (Krizhevsky 2009): exact round trips from tiny
archives written in the official layout, MD5 checks, the offline message, the restricted
unpickler, and validation of malformed entries."""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import urllib.error

import numpy as np
import pytest
import torch
from conftest import write_cifar_archive

from squeezelab.data import DataError, cifar, load_split
from squeezelab.data.cifar import (
    CIFAR_SPECS,
    ensure_archive,
    file_md5,
    read_cifar_archive,
    restricted_loads,
)


def _trust(monkeypatch, variant, path):
    """Accept the fixture archive as if it had the official MD5."""
    monkeypatch.setitem(CIFAR_SPECS, variant,
                        dataclasses.replace(CIFAR_SPECS[variant], md5=file_md5(path)))


@pytest.mark.parametrize("protocol", [3, 5])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_round_trip_is_exact(tmp_path, protocol, split):
    path = tmp_path / "cifar-10-python.tar.gz"
    written = write_cifar_archive(path, "cifar10", per_class=2, protocol=protocol)
    data = read_cifar_archive(path, "cifar10", split)
    images, labels = written[split]
    assert data.images.dtype == torch.uint8 and data.images.shape == images.shape
    assert np.array_equal(data.images.numpy(), images)
    assert np.array_equal(data.labels.numpy(), labels)
    assert data.classes == written["classes"]
    assert data.source == "cifar10" and data.skipped == []
    assert data.mean == CIFAR_SPECS["cifar10"].mean
    # 5 train batches of 20 images each, one test batch of 20.
    assert len(data) == (100 if split == "train" else 20)


def test_cifar_pixel_layout_is_rgb_planes_row_major(tmp_path):
    # Row 0 of b"data": 1024 red values, then 1024 green, then 1024 blue, each row-major.
    path = tmp_path / "a.tar.gz"
    written = write_cifar_archive(path, "cifar10", per_class=1)
    flat = written["test"][0].reshape(-1, 3072)[0]
    data = read_cifar_archive(path, "cifar10", "test")
    assert int(data.images[0, 1, 2, 5]) == int(flat[1024 + 2 * 32 + 5])
    assert int(data.images[0, 2, 31, 31]) == int(flat[3071])


def test_cifar100_uses_fine_labels(tmp_path, monkeypatch):
    path = tmp_path / "cifar-100-python.tar.gz"
    written = write_cifar_archive(path, "cifar100", per_class=1)
    _trust(monkeypatch, "cifar100", path)
    data = load_split("cifar100", "train", root=tmp_path)
    assert data.num_classes == 100 and data.classes[7] == "class007"
    assert np.array_equal(data.labels.numpy(), written["train"][1])
    assert np.array_equal(data.images.numpy(), written["train"][0])


def test_load_split_verifies_md5_of_the_archive(tmp_path):
    write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", "cifar10", per_class=1)
    with pytest.raises(DataError,
                       match="has MD5 [0-9a-f]{32}, expected c58f30108f718f92721af3b95e74349a"):
        load_split("cifar10", "train", root=tmp_path)


def test_missing_archive_names_file_and_exact_path(tmp_path):
    expected = str(tmp_path.absolute() / "cifar-10-python.tar.gz")
    with pytest.raises(DataError) as info:
        load_split("cifar10", "test", root=tmp_path, download=False)
    message = str(info.value)
    assert "cifar-10-python.tar.gz" in message and expected in message
    assert CIFAR_SPECS["cifar10"].url in message
    # what a command-line user types, and what a library user passes
    assert "--download true on the command line" in message and "download=True" in message


def test_offline_download_gives_placement_message(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar.urllib.request, "urlopen", offline)
    with pytest.raises(DataError,
                       match="without internet.*" + str(tmp_path / "cifar-100-python.tar.gz")):
        ensure_archive("cifar100", tmp_path, download=True)
    assert os.listdir(tmp_path) == []  # no partial file left behind


def test_download_verifies_and_renames_into_place(tmp_path, monkeypatch):
    source = tmp_path / "served.tar.gz"
    written = write_cifar_archive(source, "cifar10", per_class=1)
    payload = source.read_bytes()
    _trust(monkeypatch, "cifar10", source)
    monkeypatch.setattr(cifar.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    root = tmp_path / "root"
    data = load_split("cifar10", "test", root=root, download=True)
    assert (root / "cifar-10-python.tar.gz").read_bytes() == payload
    assert np.array_equal(data.images.numpy(), written["test"][0])


def test_download_with_wrong_md5_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"junk"))
    with pytest.raises(DataError, match="downloaded .* has MD5"):
        ensure_archive("cifar10", tmp_path, download=True)
    assert os.listdir(tmp_path) == []


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _Evil(marker), b"labels": []}, protocol=4)
    path = tmp_path / "a.tar.gz"
    write_cifar_archive(path, "cifar10", per_class=1, override={"test_batch": evil})
    with pytest.raises(DataError, match=r"refusing to unpickle global '(posix|os|nt)\.system'"):
        read_cifar_archive(path, "cifar10", "test")
    assert not marker.exists()


def test_restricted_unpickler_refuses_builtins():
    payload = pickle.dumps(getattr)  # a global from builtins
    with pytest.raises(DataError, match="refusing to unpickle global 'builtins.getattr'"):
        restricted_loads(payload)
    loaded = restricted_loads(pickle.dumps({b"x": np.arange(3, dtype=np.uint8)}))
    assert loaded[b"x"].tolist() == [0, 1, 2]


def test_truncated_pickle_is_an_error():
    payload = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=4)
    with pytest.raises(DataError, match="not a readable CIFAR pickle"):
        restricted_loads(payload[: len(payload) // 2], "entry")


@pytest.mark.parametrize("batch, message", [
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
     r"uint8 array \(N, 3072\), got uint8 array of shape \(2, 100\)"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "got float32"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"labels must be in \[0, 9\]"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, "missing key b'labels'"),
    ([1, 2], "expected a dict, got list"),
])
def test_malformed_batches_are_rejected(tmp_path, batch, message):
    path = tmp_path / "a.tar.gz"
    write_cifar_archive(path, "cifar10", per_class=1,
                        override={"test_batch": pickle.dumps(batch, protocol=4)})
    with pytest.raises(DataError, match=message):
        read_cifar_archive(path, "cifar10", "test")


def test_wrong_number_of_class_names_is_rejected(tmp_path):
    path = tmp_path / "a.tar.gz"
    meta = pickle.dumps({b"label_names": [b"a", b"b"]}, protocol=4)
    write_cifar_archive(path, "cifar10", per_class=1, override={"batches.meta": meta})
    with pytest.raises(DataError, match="expected 10 class names under b'label_names', got 2"):
        read_cifar_archive(path, "cifar10", "train")


def test_not_an_archive_and_bad_split(tmp_path):
    path = tmp_path / "a.tar.gz"
    path.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a readable .tar.gz"):
        read_cifar_archive(path, "cifar10", "train")
    with pytest.raises(DataError, match="split must be 'train' or 'test', got 'val'"):
        read_cifar_archive(path, "cifar10", "val")
    with pytest.raises(DataError, match="unknown CIFAR variant 'cifar1000'"):
        read_cifar_archive(path, "cifar1000", "train")


def test_image_size_resizes_cifar(tmp_path, monkeypatch):
    path = tmp_path / "cifar-10-python.tar.gz"
    data = np.zeros((20, 3072), np.uint8)
    data[:, :1024] = np.arange(20, dtype=np.uint8)[:, None] * 10  # red plane: constant per image
    data[:, 1024:2048] = 255
    batch = pickle.dumps({b"data": data, b"labels": [i % 10 for i in range(20)]}, protocol=4)
    write_cifar_archive(path, "cifar10", per_class=1, override={"test_batch": batch})
    _trust(monkeypatch, "cifar10", path)
    for size in (16, (40, 24)):
        resized = load_split("cifar10", "test", root=tmp_path, image_size=size)
        hw = (size, size) if isinstance(size, int) else size
        assert resized.images.shape == (20, 3, *hw) and resized.images.dtype == torch.uint8
        # Resizing a constant plane keeps it exactly constant.
        assert torch.equal(resized.images[:, 0], (torch.arange(20, dtype=torch.uint8) * 10)
                           .view(20, 1, 1).expand(20, *hw))
        assert bool((resized.images[:, 1] == 255).all()) and bool((resized.images[:, 2] == 0).all())
        assert resized.labels.tolist() == [i % 10 for i in range(20)]
