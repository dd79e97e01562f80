"""Tests for class-folder scanning and decoding (ImageNet layout): class order, layout errors,
exact pixels against PIL, resizing, unreadable files (error naming the file or skipped), and
the process-pool decode giving the same result as the serial one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cifar_fixtures import CIFAR10_CLASSES
from PIL import Image

from squeezelab.data import DataError, load_split
from squeezelab.data.folders import decode_files, parse_image_size, scan_split


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def _pil_rgb(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).transpose(2, 0, 1)


def test_scan_orders_classes_by_sorted_folder_name(jpeg_tree):
    files = scan_split(jpeg_tree, "train")
    assert files.classes == CIFAR10_CLASSES  # the canonical CIFAR-10 order is alphabetical
    assert len(files.files) == 30
    for f in files.files:
        assert Path(f.path).parent.name == CIFAR10_CLASSES[f.label]
        assert f.size_bytes == Path(f.path).stat().st_size


def test_decode_gives_exact_pil_pixels_and_labels(jpeg_tree, tmp_path):
    data = load_split(str(jpeg_tree), "test", cache_dir=tmp_path / "cache", progress=False)
    files = scan_split(jpeg_tree, "test")
    assert data.images.shape == (20, 3, 32, 32)
    for i, f in enumerate(files.files):
        assert np.array_equal(data.images[i].numpy(), _pil_rgb(f.path))
        assert int(data.labels[i]) == f.label
    assert data.classes == CIFAR10_CLASSES


def test_val_folder_serves_the_test_split(tmp_path):
    for split in ("train", "val"):
        for c, colour in (("a", 10), ("b", 200)):
            _png(tmp_path / "d" / split / c / "0.png", np.full((4, 4, 3), colour, np.uint8))
    data = load_split(str(tmp_path / "d"), "test", cache_dir=tmp_path / "cache", progress=False)
    assert data.labels.tolist() == [0, 1]
    assert data.images[1].unique().tolist() == [200]


def test_missing_root_and_missing_train(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_split(tmp_path / "nowhere", "train")
    (tmp_path / "d" / "test" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="has no train/ folder"):
        scan_split(tmp_path / "d", "train")


def test_missing_split_folder_and_bad_split(tmp_path):
    _png(tmp_path / "d" / "train" / "a" / "0.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match="has no test/ or val/ folder for split 'test'"):
        scan_split(tmp_path / "d", "test")
    with pytest.raises(DataError,
                       match=r"split must be one of \['test', 'train', 'val'\], got 'dev'"):
        scan_split(tmp_path / "d", "dev")


def test_empty_class_folder_is_named(tmp_path):
    _png(tmp_path / "d" / "train" / "a" / "0.png", np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "d" / "train" / "b").mkdir()
    (tmp_path / "d" / "train" / "b" / ".DS_Store").write_bytes(b"x")  # hidden: not an image
    with pytest.raises(DataError, match=r"class folders with no images: \['b'\]"):
        scan_split(tmp_path / "d", "train")


def test_train_test_class_mismatch_names_both_sides(tmp_path):
    for split, classes in (("train", "abc"), ("test", "abd")):
        for c in classes:
            _png(tmp_path / "d" / split / c / "0.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match=r"only in train: \['c'\], only in test: \['d'\]"):
        scan_split(tmp_path / "d", "test")


def test_corrupt_image_error_names_the_file(jpeg_tree, tmp_path):
    bad = jpeg_tree / "train" / "cat" / "zz_broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(DataError, match=f"cannot decode image {bad}.*--skip-bad-images true "
                       "on the command line .*skip_bad=True in Python"):
        load_split(str(jpeg_tree), "train", cache_dir=tmp_path / "cache", progress=False)


def test_truncated_jpeg_is_detected(jpeg_tree, tmp_path):
    dog_dir = jpeg_tree / "train" / "dog"
    good = dog_dir / sorted(p.name for p in dog_dir.iterdir())[0]
    cut = jpeg_tree / "train" / "dog" / "zz_cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="zz_cut.jpg"):
        decode_files([str(good), str(cut)], progress=False)


def test_skip_bad_counts_and_keeps_labels_aligned(jpeg_tree, tmp_path):
    bad1 = jpeg_tree / "train" / "bird" / "0000_notes.txt"
    bad1.write_text("not an image")
    bad2 = jpeg_tree / "train" / "truck" / "zz.jpg"
    bad2.write_bytes(b"")
    data = load_split(str(jpeg_tree), "train", cache_dir=tmp_path / "cache", skip_bad=True,
                      progress=False)
    assert data.skipped == [str(bad1), str(bad2)]
    assert len(data) == 30
    good = [f for f in scan_split(jpeg_tree, "train").files if f.path not in data.skipped]
    for i, f in enumerate(good):  # every kept image sits beside its own label
        assert int(data.labels[i]) == f.label
        assert np.array_equal(data.images[i].numpy(), _pil_rgb(f.path))
    # The cached entry remembers the bad files: without skip_bad it is still an error.
    with pytest.raises(DataError, match=f"cannot decode image {bad1}.*--skip-bad-images true"):
        load_split(str(jpeg_tree), "train", cache_dir=tmp_path / "cache", progress=False)


def test_mixed_sizes_need_image_size(tmp_path):
    _png(tmp_path / "d" / "train" / "a" / "0.png", np.zeros((4, 6, 3), np.uint8))
    _png(tmp_path / "d" / "train" / "b" / "0.png", np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(DataError, match=r"images differ in size: .*0.png is 6x4, .*0.png is 5x5"):
        load_split(str(tmp_path / "d"), "train", cache_dir=tmp_path / "c", progress=False)
    data = load_split(str(tmp_path / "d"), "train", image_size=(3, 7), cache_dir=tmp_path / "c",
                      progress=False)
    assert data.images.shape == (2, 3, 3, 7)


def test_grey_and_rgba_images_become_rgb(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    _png(tmp_path / "d" / "train" / "g" / "0.png", grey, "L")
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 77, 255
    _png(tmp_path / "d" / "train" / "r" / "0.png", rgba, "RGBA")
    data = load_split(str(tmp_path / "d"), "train", cache_dir=tmp_path / "c", progress=False)
    assert data.images.shape == (2, 3, 3, 4)
    for c in range(3):
        assert np.array_equal(data.images[0, c].numpy(), grey)
    assert data.images[1, 0].unique().tolist() == [77]
    assert data.images[1, 1:].unique().tolist() == [0]


def test_resize_keeps_a_constant_image_constant(tmp_path):
    _png(tmp_path / "a.png", np.full((50, 30, 3), (10, 20, 30), np.uint8))
    out = decode_files([str(tmp_path / "a.png")], 8, progress=False)
    assert out.images.shape == (1, 3, 8, 8)
    assert [out.images[0, c].min() for c in range(3)] == [10, 20, 30]
    assert [out.images[0, c].max() for c in range(3)] == [10, 20, 30]


def test_process_pool_decode_equals_serial(jpeg_tree):
    paths = [f.path for f in scan_split(jpeg_tree, "train").files]
    serial = decode_files(paths, progress=False, num_workers=1)
    pooled = decode_files(paths, progress=False, num_workers=2)
    assert np.array_equal(serial.images, pooled.images)
    assert np.array_equal(serial.kept, pooled.kept)


def test_parse_image_size_errors():
    assert parse_image_size(32) == (32, 32) and parse_image_size((3, 5)) == (3, 5)
    assert parse_image_size(None) is None
    with pytest.raises(DataError, match="image_size must be positive, got 0"):
        parse_image_size(0)
    with pytest.raises(DataError, match=r"image_size must be an int or \(height, width\), got 2.5"):
        parse_image_size(2.5)
    with pytest.raises(DataError, match="num_workers must be >= 1, got 0"):
        decode_files(["x"], num_workers=0, progress=False)
