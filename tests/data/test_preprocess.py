"""The preprocessing record: validated on construction, an exact round trip through a model
file's meta (and the older meta that lacks the image size), and image files prepared exactly as
the training data path prepares the same pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from squeezelab.data import DataError, load_split, to_normalized
from squeezelab.data.preprocess import Preprocess, image_files

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 0}, "image_size must be positive"),
    ({"image_size": (32, 32, 3)}, r"image_size must be an int or \(height, width\)"),
    ({"mean": (0.5, 0.5)}, r"mean must have 3 values \(R, G, B\), got 2"),
    ({"std": (0.2, 0.0, 0.2)}, r"std values must be in \(0, 1\]"),
    ({"mean": (0.5, 1.5, 0.5)}, r"mean values must be in \[0, 1\]"),
])
def test_bad_record_is_refused(kwargs, message):
    args = {"image_size": 32, "mean": MEAN, "std": STD, **kwargs}
    with pytest.raises(DataError, match=message):
        Preprocess(**args)


def test_meta_round_trip_is_exact_and_older_meta_needs_a_size():
    pre = Preprocess((24, 32), MEAN, STD)
    assert pre.image_size == (24, 32) and Preprocess(32, MEAN, STD).image_size == (32, 32)
    meta = pre.to_meta()
    assert meta == {"image_size": [24, 32], "mean": list(MEAN), "std": list(STD)}
    assert Preprocess.from_meta(meta) == pre
    assert Preprocess.from_meta(meta, image_size=64) == pre  # a recorded size wins
    older = {"mean": list(MEAN), "std": list(STD)}  # files from before image_size was kept
    assert Preprocess.from_meta(older) is None
    assert Preprocess.from_meta(older, image_size=32) == Preprocess(32, MEAN, STD)
    assert Preprocess.from_meta({"image_size": [32, 32]}, image_size=32) is None  # no mean/std


def test_from_data_is_the_train_statistics_and_size(cifar_small):
    train, test = cifar_small
    pre = Preprocess.from_data(test)
    assert pre == Preprocess((32, 32), train.mean, train.std)


def test_files_are_prepared_exactly_as_the_training_path_prepares_them(jpeg_tree, tmp_path):
    test = load_split(str(jpeg_tree), "test", cache_dir=tmp_path / "cache", progress=False)
    pre = Preprocess.from_data(test)
    files = image_files([jpeg_tree / "test"])
    assert len(files) == 20 and files == sorted(files)  # the folder order the split uses
    images, kept = pre.load_images(files)
    assert kept == files and images.dtype == torch.float32
    assert torch.equal(images, to_normalized(test.images, test.mean, test.std))


def test_other_sizes_are_resized_like_class_folder_data(tmp_path):
    rng = np.random.default_rng(0)
    big = _png(tmp_path / "data" / "train" / "a" / "big.png",
               rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    _png(tmp_path / "data" / "test" / "a" / "x.png", np.zeros((48, 64, 3), np.uint8))
    # the training path for class folders at image_size 32: decoded and resized the same way
    train = load_split(str(tmp_path / "data"), "train", image_size=32,
                       cache_dir=tmp_path / "cache", progress=False)
    images, _ = Preprocess.from_data(train).load_images([big])
    assert images.shape == (1, 3, 32, 32)
    assert torch.equal(images, to_normalized(train.images, train.mean, train.std))


def test_unreadable_file_is_named_or_skipped(tmp_path):
    good = _png(tmp_path / "good.png", np.zeros((32, 32, 3), np.uint8))
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    pre = Preprocess(32, MEAN, STD)
    with pytest.raises(DataError, match=r"cannot decode image .*notes\.txt"):
        pre.load_images([good, bad])
    images, kept = pre.load_images([bad, good], skip_bad=True)
    assert kept == [str(good)] and images.shape == (1, 3, 32, 32)


def test_normalize_refuses_images_of_another_size():
    with pytest.raises(DataError, match=r"images are \(16, 16\).*trained at \(32, 32\)"):
        Preprocess(32, MEAN, STD).normalize(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_image_files_walks_folders_and_refuses_missing_paths(tmp_path):
    a = _png(tmp_path / "photos" / "b" / "2.png", np.zeros((4, 4, 3), np.uint8))
    b = _png(tmp_path / "photos" / "a.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "photos" / ".hidden.png").write_bytes(b"")
    single = _png(tmp_path / "one.png", np.zeros((4, 4, 3), np.uint8))
    assert image_files([single, tmp_path / "photos"]) == [str(single), str(b), str(a)]
    with pytest.raises(FileNotFoundError, match="nope.png does not exist"):
        image_files([tmp_path / "nope.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="the folder has no files"):
        image_files([tmp_path / "empty"])
