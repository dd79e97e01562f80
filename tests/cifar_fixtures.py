"""Small real-image fixtures shared by the test folders: class-folder trees copied from the
shared CIFAR-10 JPEG copy (../shared/data/cifar10-jpeg, read-only), and tiny CIFAR archives
written in the official python format (Krizhevsky 2009)."""
from __future__ import annotations

import io
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np

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


def _member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_cifar_archive(path: Path, variant: str = "cifar10", per_class: int = 2, seed: int = 0,
                        protocol: int = 4, override: dict[str, bytes] | None = None) -> dict:
    """Write a tiny archive in the official layout; returns the arrays written, per split.

    Entries are pickled dicts with bytes keys, as the official (Python 2) files are. ``override``
    replaces the pickled bytes of named members (e.g. a hostile pickle).
    """
    rng = np.random.default_rng(seed)
    if variant == "cifar10":
        folder, num_classes = "cifar-10-batches-py", 10
        train_members = [f"data_batch_{i}" for i in range(1, 6)]
        test_members, meta_member = ["test_batch"], "batches.meta"
        label_key, names_key = b"labels", b"label_names"
        names = CIFAR10_CLASSES
    else:
        folder, num_classes = "cifar-100-python", 100
        train_members, test_members, meta_member = ["train"], ["test"], "meta"
        label_key, names_key = b"fine_labels", b"fine_label_names"
        names = [f"class{i:03d}" for i in range(num_classes)]
    written: dict = {}
    override = override or {}
    with tarfile.open(path, "w:gz") as tar:
        meta = {names_key: [n.encode() for n in names], b"num_cases_per_batch": 10}
        if variant == "cifar100":
            meta[b"coarse_label_names"] = [b"coarse%d" % i for i in range(20)]
        _member(tar, f"{folder}/{meta_member}",
                override.get(meta_member, pickle.dumps(meta, protocol=protocol)))
        for split, members in (("train", train_members), ("test", test_members)):
            images, labels = [], []
            for m in members:
                n = num_classes * per_class
                data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
                batch_labels = [int(x) for x in rng.permutation(np.arange(n) % num_classes)]
                batch = {b"batch_label": f"{m} of {len(members)}".encode(), b"data": data,
                         label_key: batch_labels,
                         b"filenames": [f"img_{m}_{i}.png".encode() for i in range(n)]}
                if variant == "cifar100":
                    batch[b"coarse_labels"] = [x % 20 for x in batch_labels]
                _member(tar, f"{folder}/{m}",
                        override.get(m, pickle.dumps(batch, protocol=protocol)))
                images.append(data)
                labels.extend(batch_labels)
            written[split] = (np.concatenate(images).reshape(-1, 3, 32, 32),
                              np.array(labels, dtype=np.int64))
    written["classes"] = names
    return written
