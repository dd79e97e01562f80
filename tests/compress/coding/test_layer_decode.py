"""A shared layer's two rANS streams decoded in one compiled call (compress/coding/
layer_decode.py): exactly what the step-by-step reader gives, with and without filter-group
contexts, short and long streams, and None (so that the caller names the fault) for any stream
that does not decode exactly."""
import math

import numpy as np
import pytest

from squeezelab.compress.coding import layer_decode
from squeezelab.compress.coding.ans import unpack_table, unpack_tables
from squeezelab.compress.coding.rans import num_states
from squeezelab.compress.coding.sparse_index import encode_positions, max_gap
from squeezelab.compress.format import streams

GAP_BITS = 4


def _layer(shape, keep, contexts_wanted, seed):
    """A layer's streams, coded as save_compressed codes them, and what they hold."""
    rng = np.random.default_rng(seed)
    total = math.prod(shape)
    mask = rng.random(total) < keep
    positions = np.flatnonzero(mask)
    rows = positions // (total // shape[0])
    # filters of very different scales use different clusters: what makes contexts pay
    scale = np.exp(rng.normal(0, 1.5, size=shape[0])) if contexts_wanted else None
    kept = np.clip((rng.normal(0, 1, positions.size) * (scale[rows] if scale is not None
                                                        else 1) + 8).astype(np.int64), 0, 15)
    gaps, _ = encode_positions(mask, GAP_BITS)
    coded = streams.encode_streams(kept, 16, gaps, 1 << GAP_BITS, "ans", 1024, rows=rows,
                                   row_scale=scale)
    return coded, gaps, positions, kept, total


def _decode(coded, gaps_size, total, nnz, rows):
    return layer_decode.decode_layer(
        coded.gap, unpack_table(coded.gap_table, 1 << GAP_BITS), gaps_size, max_gap(GAP_BITS),
        total, coded.index, unpack_tables(coded.index_table, 16, coded.index_contexts), nnz,
        rows)


@pytest.mark.parametrize("shape, keep, contexts_wanted", [
    ((64, 32, 3, 3), 0.6, False),    # one context, a four-state stream
    ((8, 4, 1, 1), 0.7, False),      # a short one-state stream
    ((64, 48, 3, 3), 0.4, True),     # filter groups, decoded straight into place
    ((24, 96, 1, 1), 0.6, True),     # groups in a one-state stream
])
def test_one_call_gives_what_the_step_by_step_reader_gives(shape, keep, contexts_wanted):
    coded, gaps, positions, kept, total = _layer(shape, keep, contexts_wanted, seed=3)
    if contexts_wanted:
        assert coded.index_contexts > 1
    symbols = positions.size + (shape[0] if coded.index_contexts > 1 else 0)
    assert num_states(symbols) == (4 if math.prod(shape) * keep > 9000 else 1)  # as labelled
    got = _decode(coded, gaps.size, total, positions.size, shape[0])
    assert got is not None
    assert np.array_equal(got[0], gaps) and np.array_equal(got[1], positions)
    assert np.array_equal(got[2], kept)


def test_streams_that_do_not_decode_exactly_give_none():
    coded, gaps, positions, kept, total = _layer((64, 32, 3, 3), 0.6, True, seed=5)
    assert coded.index_contexts > 1 and positions.size >= 8192  # groups, four states
    n, nnz, rows = gaps.size, positions.size, 64
    for gap, index, count, kept_count in (
            (coded.gap[:-2], coded.index, n, nnz),          # gap stream cut short
            (coded.gap + b"\x01\x00", coded.index, n, nnz),  # a word too many
            (coded.gap, coded.index[:-2], n, nnz),          # index stream cut short
            (coded.gap, coded.index, n - 1, nnz),           # a wrong gap count
            (coded.gap, coded.index, n, nnz - 1),           # a wrong kept count
            (coded.gap[:-1], coded.index, n, nnz)):         # not whole 16-bit words
        damaged = streams.LayerStreams(coded.coder, coded.index_table, index,
                                       coded.gap_table, gap, coded.index_contexts)
        assert _decode(damaged, count, total, kept_count, rows) is None
    assert _decode(coded, n, total - 100, nnz, rows) is None  # positions past the tensor


def test_without_numba_there_is_no_fast_path(monkeypatch):
    coded, gaps, positions, _, total = _layer((8, 4, 1, 1), 0.7, False, seed=1)
    monkeypatch.setattr(layer_decode, "_KERNEL", False)
    assert _decode(coded, gaps.size, total, positions.size, 8) is None
