"""A tiny study recipe for the study engine's tests (two cells of a tiny SqueezeNet, seconds
to run), the helpers that write and run it quietly, and the settings of a kind that trains
nothing (``echo``), registered by the tests that need it."""
from __future__ import annotations

from dataclasses import dataclass

import yaml
from model_configs import TINY

from squeezelab.config import ConfigBase


def tiny_recipe(data, **changes) -> dict:
    """A study of two tiny-model cells on ``data``: 100 train images at batch 50 (2 steps an
    epoch), 50 test images, fp32 and NCHW (no autotune), 2 epochs."""
    recipe = {
        "study": "tiny",
        "title": "two activations of a tiny SqueezeNet",
        "source": {"paper": "a test", "where": "nowhere"},
        "base": {"data": str(data), "model": "squeezenet_cifar",
                 "model_args": dict(TINY), "epochs": 2, "batch_size": 50,
                 "optimizer": "adamw", "lr": 0.003, "limit_train": 100, "limit_test": 50,
                 "precision": "fp32", "channels_last": False, "subset_seed": 0},
        "axes": {"act": [{"name": "relu", "model_args": {"activation": "relu"}},
                         {"name": "tanh", "model_args": {"activation": "tanh"}}]},
        "seeds": [0],
        "budgets": {"smoke": {}, "cpu": {"epochs": 3}, "full": {"epochs": 4}},
        "published": {"metric": "top1", "dataset": "CIFAR-10", "source": "a paper",
                      "values": [{"where": {"act": "relu"}, "percent": 50.0}]},
    }
    recipe.update(changes)
    return recipe


def write(path, recipe: dict):
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))  # axis order matters
    return path


def quiet(*_):
    pass


@dataclass
class EchoSettings(ConfigBase):
    value: float = 0.0
    seed: int = 0
