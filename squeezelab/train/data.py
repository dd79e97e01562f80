"""The one place a run's data is loaded from its config: the data source (``data``, else the
shared CIFAR-10 copy, else the official download), the balanced subsets (``limit_train`` /
``limit_test`` chosen under ``data_seed``: ``subset_seed``, else ``seed``), the image size and
the decode options. The loop, the workflows, the CLI and the benchmarks all call it, so a
config means the same images everywhere.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from squeezelab.data import ImageTensors, load_split, resolve_default_cifar10
from squeezelab.train.config import TrainConfig


class RunData(NamedTuple):
    """(train, test) ImageTensors; a split not asked for is None."""

    train: ImageTensors | None
    test: ImageTensors | None


def load_run_data(cfg: TrainConfig | Mapping[str, Any], *, train: bool = True,
                  test: bool = True, is_main: bool = True) -> RunData:
    """The (train, test) splits ``cfg`` names. ``cfg`` may also be a saved config's dict (a
    checkpoint's ``meta["config"]``); keys it lacks take TrainConfig's defaults. Progress bars
    show only on the main process and only when ``cfg.progress`` is on."""
    if not isinstance(cfg, TrainConfig):
        known = set(TrainConfig.field_names())
        cfg = TrainConfig.from_dict({k: v for k, v in dict(cfg).items() if k in known},
                                    source="saved config")
    source = cfg.data or resolve_default_cifar10()
    common = dict(root=cfg.data_root, image_size=cfg.image_size, download=cfg.download,
                  skip_bad=cfg.skip_bad_images, seed=cfg.data_seed,
                  progress=is_main and cfg.progress)
    return RunData(
        load_split(source, "train", limit=cfg.limit_train, **common) if train else None,
        load_split(source, "test", limit=cfg.limit_test, **common) if test else None,
    )


__all__ = ["RunData", "load_run_data"]
