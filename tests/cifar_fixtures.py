"""Small real-image fixtures shared by the test folders: class-folder trees copied from the
shared CIFAR-10 JPEG copy (../shared/data/cifar10-jpeg, read-only)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

SHARED_CIFAR10 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


def copy_tree(dst: Path, train_per_class: int, test_per_class: int) -> Path:
    """Copy the first few JPEGs of every class of the shared CIFAR-10 copy into ``dst``."""
    src = SHARED_CIFAR10.resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"the tests need the shared CIFAR-10 copy at {src}")
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in CIFAR10_CLASSES:
            (dst / split / name).mkdir(parents=True)
            for f in sorted(os.listdir(src / split / name))[:count]:
                shutil.copy(src / split / name / f, dst / split / name / f)
    return dst
