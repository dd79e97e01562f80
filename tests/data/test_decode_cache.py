"""Tests for the decoded-image cache: exact round trip, reuse without decoding, a new entry when
the source changes, detection and rebuild of a corrupt entry, train statistics for every split."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from squeezelab.data import load_split, sources
from squeezelab.data.cache import cache_key, default_cache_dir, entry_paths
from squeezelab.data.folders import scan_split
from squeezelab.data.sources import channel_stats


def _count_decodes(monkeypatch):
    calls = []
    real = sources.decode_files

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(sources, "decode_files", counting)
    return calls


def _forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded although the cache holds this split")

    monkeypatch.setattr(sources, "decode_files", fail)


def test_cache_round_trip_is_exact_and_reused(jpeg_tree, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_split(str(jpeg_tree), "train", cache_dir=cache, progress=False)
    entries = sorted(p.name for p in (cache / "decoded").iterdir())
    assert len(entries) == 2
    assert entries[0].endswith(".json") and entries[1].endswith(".safetensors")
    _forbid_decoding(monkeypatch)
    second = load_split(str(jpeg_tree), "train", cache_dir=cache, progress=False)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert (first.classes, first.mean, first.std, first.source) == \
        (second.classes, second.mean, second.std, second.source)
    assert second.source == str(jpeg_tree.absolute())
    assert not any(p.name.endswith(".tmp") for p in (cache / "decoded").iterdir())
    # Nothing is written into the source folder.
    assert sorted(p.name for p in jpeg_tree.iterdir()) == ["test", "train"]


def test_sources_change_gives_a_new_entry(jpeg_tree, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    load_split(str(jpeg_tree), "train", cache_dir=cache, progress=False)
    calls = _count_decodes(monkeypatch)
    victim = sorted((jpeg_tree / "train" / "ship").iterdir())[0]
    frog = sorted((jpeg_tree / "train" / "frog").iterdir())[0]
    victim.write_bytes(frog.read_bytes())  # same path, new content (and mtime)
    changed = load_split(str(jpeg_tree), "train", cache_dir=cache, progress=False)
    assert len(calls) == 1
    paths = [f.path for f in scan_split(jpeg_tree, "train").files]
    assert torch.equal(changed.images[paths.index(str(victim))],
                       changed.images[paths.index(str(frog))])
    load_split(str(jpeg_tree), "train", cache_dir=cache, progress=False)
    assert len(calls) == 1  # the third load reuses the second's entry
    # Different image sizes are different entries.
    load_split(str(jpeg_tree), "train", image_size=16, cache_dir=cache, progress=False)
    assert len(calls) == 2


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "json_garbage", "json_wrong_key"])
def test_corrupt_entry_is_detected_and_rebuilt(jpeg_tree, tmp_path, monkeypatch, damage):
    cache = tmp_path / "cache"
    good = load_split(str(jpeg_tree), "test", cache_dir=cache, progress=False)
    key = cache_key(scan_split(jpeg_tree, "test"), None)
    json_path, st_path = entry_paths(cache, key)
    if damage == "flip_byte":
        blob = bytearray(st_path.read_bytes())
        blob[-100] ^= 0xFF  # inside the pixel data: same length, different content
        st_path.write_bytes(bytes(blob))
    elif damage == "truncate":
        st_path.write_bytes(st_path.read_bytes()[:-10])
    elif damage == "json_garbage":
        json_path.write_text("{not json")
    else:
        record = json.loads(json_path.read_text())
        record["key"] = "0" * 64
        json_path.write_text(json.dumps(record))
    calls = _count_decodes(monkeypatch)
    with pytest.warns(UserWarning, match="rebuilding it"):
        rebuilt = load_split(str(jpeg_tree), "test", cache_dir=cache, progress=False)
    assert len(calls) == 1
    assert torch.equal(rebuilt.images, good.images) and torch.equal(rebuilt.labels, good.labels)
    _forbid_decoding(monkeypatch)  # the rebuilt entry is trusted again
    assert torch.equal(load_split(str(jpeg_tree), "test", cache_dir=cache, progress=False).images,
                       good.images)


def test_test_split_uses_train_statistics(jpeg_tree, tmp_path):
    cache = tmp_path / "cache"
    test = load_split(str(jpeg_tree), "test", cache_dir=cache, progress=False)
    train = load_split(str(jpeg_tree), "train", cache_dir=cache, progress=False)
    assert test.mean == train.mean and test.std == train.std
    assert train.mean == channel_stats(train.images)[0]
    assert test.mean != channel_stats(test.images)[0]


def test_channel_stats_exact_on_hand_made_images():
    images = torch.zeros(2, 3, 1, 2, dtype=torch.uint8)
    images[:, 0] = torch.tensor([[[0, 255]], [[255, 255]]], dtype=torch.uint8)  # mean 3/4
    images[:, 1] = 51  # constant: std raised to one grey level
    mean, std = channel_stats(images)
    assert mean == pytest.approx((0.75, 0.2, 0.0), abs=1e-12)
    assert std[0] == pytest.approx(np.sqrt(0.75 * 0.25), abs=1e-12)
    assert std[1] == std[2] == pytest.approx(1 / 255)


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert default_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("SQUEEZELAB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "squeezelab"
    assert not os.path.exists(tmp_path / "home")  # nothing created until something is written
