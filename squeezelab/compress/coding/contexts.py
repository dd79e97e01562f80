"""Contexts for a layer's cluster indices: its filters grouped by how their indices are spread.

The filters of one layer do not share one distribution of cluster indices: a filter of large
weights uses the outer clusters more than a filter of small ones. Coding every index of a layer
with one static table (what rANS does on its own) pays for that spread; coding each filter with
the table of its *group* does not, at the price of a table per group and the group number of
each filter. ``group_rows`` picks the groups: a Lloyd iteration on the filters' index histograms
(assign each filter to the group whose table codes it in the fewest bits, re-estimate the tables
from their filters), started from the filters' scale order, for each group count it tries; it
keeps the count whose estimated total (indices + tables + group numbers) is smallest. Measured on
the main-job model (pruned, 4-bit): 3.4% fewer index bytes than one table per layer
(``benchmarks/sqz_entropy.py`` has the other contexts tried, which gain less).

The decoder needs only the group numbers (stored in the file), not how they were found, so
a better grouping later needs no format change.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from squeezelab.compress.coding import jit

#: The group counts tried per layer (a count above the number of filters is skipped).
GROUP_COUNTS = (1, 2, 3, 4, 6, 8)
#: The most groups a file may give a layer's indices (the reader's bound).
MAX_GROUPS = 16
TABLE_BITS_PER_SYMBOL = 6  # what a length table costs (ans.TABLE_BITS)
_ITERATIONS = 8


def _entropy_bits(counts: np.ndarray) -> float:
    c = counts[counts > 0]
    return float(-(c * np.log2(c / c.sum())).sum()) if c.size else 0.0


def _estimated_bits(counts: np.ndarray, groups: np.ndarray, num_groups: int) -> float:
    """Indices under their group's table, the tables, and the group numbers (uniform)."""
    num_symbols = counts.shape[1]
    bits = sum(_entropy_bits(counts[groups == g].sum(0)) + num_symbols * TABLE_BITS_PER_SYMBOL
               for g in range(num_groups))
    return bits + counts.shape[0] * math.log2(num_groups)


def _lloyd(counts: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    for _ in range(_ITERATIONS):
        # a pinch of every symbol in every table, so a filter can move to any group
        tables = np.stack([counts[groups == g].sum(0) for g in range(num_groups)]) + 0.2
        cost = counts @ -np.log2(tables / tables.sum(1, keepdims=True)).T  # filters x groups
        new = np.argmin(cost, axis=1)
        if np.array_equal(new, groups):
            break
        groups = new
    used = np.unique(groups)  # renumber without empty groups
    return np.searchsorted(used, groups)


def group_rows(counts: np.ndarray, scale: np.ndarray | None = None,
               group_counts: tuple[int, ...] = GROUP_COUNTS) -> tuple[int, np.ndarray]:
    """``(number of groups, group of each row)`` for a layer whose row r (a filter) has
    ``counts[r, s]`` indices of symbol s. ``scale`` (per row, e.g. the filter's mean |weight|)
    orders the rows for the first grouping (quantiles); without it, the row's average cost
    under the layer's one table does. One group (all zeros) when grouping does not pay."""
    counts = np.asarray(counts, dtype=np.float64)
    rows = counts.shape[0]
    if rows == 0:
        return 1, np.zeros(0, dtype=np.int64)
    if scale is None:
        total = counts.sum(0) + 0.2
        per_row = counts.sum(1)
        scale = (counts @ -np.log2(total / total.sum())) / np.maximum(per_row, 1)
    best_groups = np.zeros(rows, dtype=np.int64)
    best_bits = _estimated_bits(counts, best_groups, 1)
    for n in group_counts:
        if n < 2 or n > rows:
            continue
        edges = np.quantile(scale, np.linspace(0, 1, n + 1)[1:-1])
        groups = _lloyd(counts, np.searchsorted(edges, scale), n)
        n_used = int(groups.max()) + 1
        bits = _estimated_bits(counts, groups, n_used)
        if n_used > 1 and bits < best_bits:
            best_bits, best_groups = bits, groups
    return int(best_groups.max()) + 1, best_groups.astype(np.int64)


def ungroup(grouped: np.ndarray, groups: np.ndarray, per_row: np.ndarray) -> np.ndarray:
    """The indices back in flattened order (int32), from ``grouped``: the indices of group 0's
    filters, then group 1's, ..., each filter's in filter order; ``groups[r]`` is filter
    ``r``'s group and ``per_row[r]`` how many indices it has. Per filter, not per index: each
    filter's run is copied whole (numba; numpy's gather over every index without it)."""
    by_group = np.argsort(groups, kind="stable")
    source = np.empty(groups.size, dtype=np.int64)  # where each filter's run starts in grouped
    source[by_group] = np.cumsum(per_row[by_group]) - per_row[by_group]
    starts = np.cumsum(per_row) - per_row  # and in flattened order
    kernel = jit.compiled(_ungroup_kernel)
    if kernel is None:
        gather = np.repeat(source - starts, per_row) + np.arange(int(per_row.sum()))
        return grouped[gather].astype(np.int32, copy=False)
    out = np.empty(grouped.size, dtype=np.int32)
    kernel(grouped, source, starts, per_row, out)
    return out


def _ungroup_kernel(grouped, source, starts, per_row, out):  # pragma: no cover - numba
    for r in range(per_row.size):
        s, d = source[r], starts[r]
        for k in range(per_row[r]):
            out[d + k] = grouped[s + k]


def neighbours(positions: np.ndarray, shape: Sequence[int],
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, first, second)`` of a layer's kept weights at the increasing flat
    ``positions`` of a weight of ``shape``: each one's filter, and the kept weights whose
    values best predict it (their index among the kept weights, -1 for none; always an
    earlier one). For a kernel wider or taller than 1: the tap to its left (``first``) and the
    one above it (``second``), where kept; for 1x1 kernels and fully connected weights: the
    kept weight before it in its filter, and none."""
    positions = np.asarray(positions, dtype=np.int64)
    n = positions.size
    rows_count = shape[0] if len(shape) else 1
    row_size = math.prod(shape) // max(rows_count, 1) if n else 1
    rows = positions // row_size
    none = np.full(n, -1, dtype=np.int64)
    height, width = (shape[2], shape[3]) if len(shape) == 4 else (1, 1)
    if height * width == 1:
        first = np.arange(-1, n - 1, dtype=np.int64)
        first[np.flatnonzero(rows != np.concatenate([[-1], rows[:-1]]))] = -1
        return rows, first, none
    where = np.full(math.prod(shape), -1, dtype=np.int64)  # kept index at each position
    where[positions] = np.arange(n)

    def at(offset: int, valid: np.ndarray) -> np.ndarray:
        return np.where(valid, where[np.maximum(positions - offset, 0)], -1)

    tap = positions % (height * width)
    first = at(1, tap % width > 0) if width > 1 else none
    second = at(width, tap >= width) if height > 1 else none
    return rows, first, second


__all__ = ["GROUP_COUNTS", "MAX_GROUPS", "group_rows", "neighbours", "ungroup"]
