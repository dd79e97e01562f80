"""What ``read_sqz`` gives back: a .sqz file's parsed header and decoded tensors (``SqzFile``),
a weight-shared tensor kept as codebook, cluster indices and positions (``SharedTensor``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from squeezelab.compress.coding.sparse_index import expand
from squeezelab.compress.format.layout import _INDEX_NP
from squeezelab.compress.quantization.weight_sharing import index_dtype


@dataclass
class SharedTensor:
    """A decoded weight-shared tensor: the kept weights' flat ``positions`` and cluster
    ``symbols``, and the ``codebook``. ``dense()`` is the weight (what ``dense_weight(codebook,
    indices, mask)`` computes, value for value); ``indices`` and ``mask`` are built on first use
    (loading a model for inference never needs them)."""

    codebook: torch.Tensor  # float32 [2**weight_bits]
    shape: list[int]
    positions: np.ndarray  # int64, increasing, into the flattened weight
    symbols: np.ndarray  # cluster index of each kept weight
    weight_bits: int
    gap_bits: int
    num_fillers: int

    @property
    def mask(self) -> torch.Tensor:
        """bool, the weight's shape: True where a weight is kept."""
        mask = np.zeros(math.prod(self.shape), dtype=np.bool_)
        mask[self.positions] = True
        return torch.from_numpy(mask.reshape(self.shape))

    @property
    def indices(self) -> torch.Tensor:
        """``index_dtype(weight_bits)``, the weight's shape, 0 where pruned."""
        # Scatter in numpy (single-threaded): torch's multi-threaded index_put is slower for
        # this on a busy machine. symbols < 2**bits: checked in the header and by the coder.
        indices = np.zeros(math.prod(self.shape), dtype=_INDEX_NP[index_dtype(self.weight_bits)])
        indices[self.positions] = self.symbols
        return torch.from_numpy(indices.reshape(self.shape))

    def dense(self) -> torch.Tensor:
        """The float32 weight: codebook values at the kept positions, exactly +0.0 elsewhere."""
        weight = expand(math.prod(self.shape), self.positions, self.symbols,
                        self.codebook.numpy().astype(np.float32, copy=False))
        return torch.from_numpy(weight.reshape(self.shape))


@dataclass
class SqzFile:
    """What ``read_sqz`` returns: the parsed header and the decoded tensors."""

    path: Path | None
    version: int
    header: dict[str, Any]
    file_size: int
    dense: dict[str, torch.Tensor] = field(repr=False)
    shared: dict[str, SharedTensor] = field(repr=False)

    @property
    def model(self) -> dict[str, Any]:
        return self.header["model"]

    @property
    def class_names(self) -> list[str] | None:
        return self.header.get("class_names")

    @property
    def meta(self) -> dict[str, Any]:
        return self.header.get("meta", {})

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self.header["tensors"]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor as a plain (dense) state dict of the rebuilt model."""
        out: dict[str, torch.Tensor] = {}
        for entry in self.entries:
            name = entry["name"]
            out[name] = self.shared[name].dense() if name in self.shared else self.dense[name]
        return out


__all__ = ["SharedTensor", "SqzFile"]
