"""Index contexts (compress/coding/contexts.py): filters grouped by their cluster-index
histograms when the groups' tables pay for themselves, one group when they do not."""
import math

import numpy as np

from squeezelab.compress.coding.contexts import MAX_GROUPS, group_rows, ungroup


def _entropy_bits(counts):
    c = counts[counts > 0]
    return float(-(c * np.log2(c / c.sum())).sum())


def _rows(rng, n, p, per_row=400):
    return np.stack([rng.multinomial(per_row, p) for _ in range(n)])


def test_two_kinds_of_filter_are_found_and_code_smaller():
    rng = np.random.default_rng(0)
    narrow = np.array([0.05, 0.4, 0.4, 0.05, 0.025, 0.025, 0.025, 0.025])  # small weights
    wide = np.array([0.025, 0.025, 0.025, 0.025, 0.05, 0.4, 0.4, 0.05])  # large weights
    counts = np.concatenate([_rows(rng, 30, narrow), _rows(rng, 20, wide)])
    order = rng.permutation(50)
    counts, kind = counts[order], (order >= 30).astype(int)
    n, groups = group_rows(counts, scale=kind + rng.random(50) * 0.1)
    assert n == 2 and groups.shape == (50,)
    # the groups are the two kinds (whichever number each got)
    assert len({(k, g) for k, g in zip(kind, groups)}) == 2
    one_table = _entropy_bits(counts.sum(0))
    two_tables = sum(_entropy_bits(counts[groups == g].sum(0)) for g in range(2))
    assert two_tables < 0.8 * one_table
    # without a scale to start from, the rows' cost under one table orders them as well
    n, groups = group_rows(counts)
    assert n == 2 and len({(k, g) for k, g in zip(kind, groups)}) == 2


def test_one_group_when_the_filters_look_alike_or_are_few():
    rng = np.random.default_rng(1)
    p = np.full(16, 1 / 16)
    n, groups = group_rows(_rows(rng, 40, p))
    assert n == 1 and not groups.any()
    n, groups = group_rows(_rows(rng, 1, p))
    assert n == 1 and groups.tolist() == [0]
    n, groups = group_rows(np.zeros((0, 16)))
    assert n == 1 and groups.size == 0


def test_group_numbers_are_compact_and_bounded():
    rng = np.random.default_rng(2)
    counts = np.concatenate([_rows(rng, 8, np.eye(16)[k] * 0.9 + 0.1 / 16, per_row=300)
                             for k in range(6)])
    n, groups = group_rows(counts, scale=np.repeat(np.arange(6), 8).astype(float))
    assert 2 <= n <= MAX_GROUPS
    assert sorted(set(groups.tolist())) == list(range(n))
    assert math.isclose(np.bincount(groups).sum(), 48)


def test_ungroup_puts_each_filters_run_back_in_place_with_or_without_numba(monkeypatch):
    from squeezelab.compress.coding import jit

    # filters 0..3 in groups 1, 0, 1, 0 with 2, 1, 0, 3 indices: group 0's filters (1, 3)
    # come first in the grouped order, then group 1's (0, 2)
    groups, per_row = np.array([1, 0, 1, 0]), np.array([2, 1, 0, 3])
    grouped = np.array([10, 30, 31, 32, 0, 1], dtype=np.int32)
    want = [0, 1, 10, 30, 31, 32]
    assert ungroup(grouped, groups, per_row).tolist() == want
    rng = np.random.default_rng(0)
    groups, per_row = rng.integers(0, 5, 300), rng.integers(0, 40, 300)
    grouped = rng.integers(0, 64, int(per_row.sum())).astype(np.int32)
    compiled = ungroup(grouped, groups, per_row)
    monkeypatch.setattr(jit, "compiled", lambda kernel: None)
    assert compiled.dtype == np.int32
    assert np.array_equal(ungroup(grouped, groups, per_row), compiled)


def test_neighbours_are_the_kept_taps_left_and_above_or_the_previous_in_a_filter():
    from squeezelab.compress.coding.contexts import neighbours

    # two 1-channel 3x3 filters; kept taps (flat positions) of filter 0: 0 1 3 4 8, filter 1: 10
    positions = np.array([0, 1, 3, 4, 8, 10])
    rows, first, second = neighbours(positions, (2, 1, 3, 3))
    assert rows.tolist() == [0, 0, 0, 0, 0, 1]
    # left: tap 1 has tap 0, tap 4 has tap 3 (index 2); tap 3 starts a kernel row; tap 8's
    # left (7) was pruned; filter 1's tap 1 (10) has its tap 0 (9) pruned
    assert first.tolist() == [-1, 0, -1, 2, -1, -1]
    # above: tap 3 has tap 0, tap 4 has tap 1; tap 8's (5) was pruned
    assert second.tolist() == [-1, -1, 0, 1, -1, -1]
    # 1x1 kernels and linear weights: the kept weight before, within the filter
    rows, first, second = neighbours(np.array([0, 2, 3, 5]), (2, 3))
    assert rows.tolist() == [0, 0, 1, 1] and first.tolist() == [-1, 0, -1, 2]
    assert (second == -1).all()
    assert neighbours(np.array([1, 4]), (2, 3, 1, 1))[1].tolist() == [-1, -1]
