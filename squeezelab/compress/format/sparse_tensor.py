"""The ``"sparse"`` encoding of a .sqz file (version 5): a pruned tensor that is not weight
shared, stored as its kept values (raw, in the file's float dtype) and their positions as the
relative-index gap stream a shared layer uses (``sparse_index.py``, coded by ``streams.py``).

This is what pruning alone saves on disk (Han et al. 2015, arXiv 1506.02626: the pruned weights
in compressed sparse form, 8-bit relative indices for conv layers and 5-bit for fully connected
ones), the "pruned only" row of Deep Compression's tables. A writer tries it for every
``pruned_weight`` and stores the tensor sparse where that takes fewer bytes than dense; either
way a pruned weight keeps its values in the file's float dtype (never uniform levels, which
would not keep its zeros exact), so ``round_stored_floats_`` knows what a file stores.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from squeezelab.compress.coding.sparse_index import encode_positions
from squeezelab.compress.format.layout import _DTYPE_NAMES, _DTYPES, DEFAULT_GAP_BITS
from squeezelab.compress.format.streams import encode_gaps, symbols_crc32

#: A weight with at least this share of exact zeros is a pruned weight: one worth a try at
#: sparse storage (at 25% pruned, fp32 values and ~1-byte gaps take a little less than dense)
PRUNED_SHARE = 0.25


def pruned_weight(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` (as the model holds it, before any rounding to a file's float dtype)
    is a pruned weight: a float tensor of two or more dimensions, ``PRUNED_SHARE`` of it zero."""
    return (tensor.is_floating_point() and tensor.dim() > 1 and tensor.numel() > 0
            and int((tensor == 0).sum()) >= PRUNED_SHARE * tensor.numel())


def default_gap_bits(shape: torch.Size | list[int]) -> int:
    """The paper's relative-index width for a weight of ``shape``: 8 bits for conv, 5 for
    fully connected (and anything else)."""
    return DEFAULT_GAP_BITS["conv" if len(shape) > 2 else "linear"]


def encode_sparse(name: str, tensor: torch.Tensor, add: Callable[[bytes], list[int]],
                  gap_bits: int | None, coder: str, lane_symbols: int) -> dict[str, Any] | None:
    """The header entry of ``tensor`` (a float tensor, already in the dtype it is stored in)
    stored sparse, its streams given to ``add`` (which returns each one's ``[offset, length]``),
    or None without adding anything where dense storage takes no more bytes."""
    values = tensor.detach().cpu().contiguous().reshape(-1)
    itemsize = values.element_size()
    mask = (values != 0).numpy()
    nnz = int(mask.sum())
    g = gap_bits if gap_bits is not None else default_gap_bits(tensor.shape)
    gaps, is_filler = encode_positions(mask, g)
    gap_symbols = int(gaps.max()) + 1 if gaps.size else 0
    used, table, stream = encode_gaps(gaps, gap_symbols, coder, lane_symbols)
    kept = values[torch.from_numpy(mask)]
    raw = (kept.view(torch.int16) if kept.dtype == torch.bfloat16 else kept).numpy()
    raw_bytes = raw.astype(raw.dtype.newbyteorder("<"), copy=False).tobytes()
    if len(raw_bytes) + len(table) + len(stream) >= values.numel() * itemsize:
        return None
    entry: dict[str, Any] = {
        "name": name, "shape": list(tensor.shape), "dtype": _DTYPE_NAMES[tensor.dtype],
        "encoding": "sparse", "gap_bits": g, "nnz": nnz, "num_entries": int(gaps.size),
        "num_fillers": int(is_filler.sum()), "gap_symbols": gap_symbols,
        "values": add(raw_bytes), "gap_table": add(table), "gap": add(stream),
    }
    if used != "huffman":  # absent means Huffman
        entry["coder"] = used
        entry["symbols_crc32"] = symbols_crc32(np.zeros(0, np.int32), gaps)
    return entry


def sparse_tensor(entry: dict[str, Any], payload: memoryview,
                  positions: np.ndarray) -> torch.Tensor:
    """The tensor of a sparse ``entry`` (validated by ``layout._parse``) whose gap stream gave
    ``positions``: its values there, exactly zero elsewhere, in the entry's dtype."""
    torch_dtype, np_dtype = _DTYPES[entry["dtype"]]
    off, length = entry["values"]
    kept = np.frombuffer(payload[off:off + length], dtype=np_dtype)
    if torch_dtype == torch.bfloat16:  # numpy has no bfloat16: its bits as int16
        kept = kept.view("<i2")
    flat = np.zeros(math.prod(entry["shape"]), dtype=kept.dtype.newbyteorder("="))
    flat[positions] = kept
    out = torch.from_numpy(flat.reshape(entry["shape"]))
    return out.view(torch.bfloat16) if torch_dtype == torch.bfloat16 else out.to(torch_dtype)


__all__ = ["PRUNED_SHARE", "default_gap_bits", "encode_sparse", "pruned_weight", "sparse_tensor"]
