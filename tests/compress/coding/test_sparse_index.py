"""Tests for relative-index (gap) coding with filler entries and fixed-width bit packing
(Deep Compression, arXiv 1510.00149, section 2)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squeezelab.compress.coding.sparse_index import (
    decode_positions,
    encode_positions,
    max_gap,
    max_total,
    pack_bits,
    unpack_bits,
)


def _mask(total, positions):
    m = np.zeros(total, dtype=bool)
    m[list(positions)] = True
    return m


def test_hand_example_with_fillers():
    # gap_bits=3: real gaps 1..7, value 0 = filler advancing 7 positions
    gaps, is_filler = encode_positions(_mask(22, [1, 4, 20]), 3)
    # 1 (from -1: 2), 4 (3), 20 = 4 + 7 + 7 + 2: two fillers then 2; 1 weight after -> no tail
    assert gaps.tolist() == [2, 3, 0, 0, 2]
    assert is_filler.tolist() == [False, False, True, True, False]
    np.testing.assert_array_equal(decode_positions(gaps, 3, 22), [1, 4, 20])


def test_exact_max_gap_needs_no_filler_and_tail_fillers():
    gaps, _ = encode_positions(_mask(7, [6]), 3)  # distance 7 = max_gap: stored as 7
    assert gaps.tolist() == [7]
    gaps, is_filler = encode_positions(np.zeros(20, dtype=bool), 3)
    assert gaps.tolist() == [0, 0]  # 20 pruned weights: fillers until < 7 remain
    assert decode_positions(gaps, 3, 20).size == 0
    assert 20 <= max_total(2, 3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=2000), st.integers(1, 10), st.floats(0.0, 1.0))
def test_round_trip_random_masks(bits, gap_bits, keep):
    rng = np.random.default_rng(len(bits))
    mask = np.array(bits, dtype=bool) & (rng.random(len(bits)) < keep)
    gaps, is_filler = encode_positions(mask, gap_bits)
    assert gaps.max(initial=0) <= max_gap(gap_bits)
    assert int(is_filler.sum()) == int((gaps == 0).sum())
    assert gaps.size - int(is_filler.sum()) == int(mask.sum())
    assert mask.size <= max_total(gaps.size, gap_bits)
    np.testing.assert_array_equal(decode_positions(gaps, gap_bits, mask.size),
                                  np.flatnonzero(mask))


def test_decode_rejects_streams_that_do_not_fit():
    with pytest.raises(ValueError, match="reaches position 9, past the 5 weights"):
        decode_positions(np.array([5, 5]), 3, 5)
    with pytest.raises(ValueError, match="need trailing fillers"):
        decode_positions(np.array([1]), 3, 30)
    with pytest.raises(ValueError, match=r"gap values must be in \[0, 7\]"):
        decode_positions(np.array([8]), 3, 30)
    with pytest.raises(ValueError, match=r"gap_bits must be an int in \[1, 16\], got 0"):
        encode_positions(np.ones(3, dtype=bool), 0)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64, np.uint64])
def test_compiled_and_numpy_decoders_agree_on_streams_and_errors(monkeypatch, dtype):
    """``decode_positions`` runs a numba kernel; without numba, numpy passes: the same
    positions and the same errors, for the integer dtypes the coders hand it."""
    from squeezelab.compress.coding import jit, sparse_index

    rng = np.random.default_rng(3)
    mask = rng.random(50_000) < 0.3
    mask[:2000] = False  # a long run: fillers
    gaps, _ = encode_positions(mask, 5)
    cases = [(gaps.astype(dtype), mask.size), (np.array([5, 5], dtype), 5),
             (np.array([1], dtype), 30), (np.array([8], dtype), 30), (np.zeros(0, dtype), 20)]

    def outcome(g, total):
        try:
            return decode_positions(g, 3 if g.size < 5 else 5, total).tolist()
        except ValueError as e:
            return str(e)

    compiled = [outcome(*c) for c in cases]
    assert jit.compiled(sparse_index.positions_kernel) is not None  # numba: a dependency
    monkeypatch.setattr(jit, "compiled", lambda kernel: None)
    assert [outcome(*c) for c in cases] == compiled
    assert compiled[0] == np.flatnonzero(mask).tolist()
    assert "past the 5 weights" in compiled[1] and "trailing fillers" in compiled[2]
    assert "gap values must be in [0, 7]" in compiled[3]
    assert compiled[4].startswith("gap stream ends at position -1 but 20 weights need")


def test_expand_places_table_values_at_positions_with_or_without_numba(monkeypatch):
    from squeezelab.compress.coding import jit, sparse_index

    table = np.array([-0.5, 0.25, 2.0], dtype=np.float32)
    positions, symbols = np.array([0, 3, 4], dtype=np.int64), np.array([2, 0, 2], np.int32)
    want = np.array([2.0, 0, 0, -0.5, 2.0, 0], dtype=np.float32)
    got = sparse_index.expand(6, positions, symbols, table)
    assert got.dtype == np.float32 and np.array_equal(got, want)
    assert not np.signbit(got[[1, 2, 5]]).any()  # pruned weights exactly +0.0
    monkeypatch.setattr(jit, "compiled", lambda kernel: None)
    assert np.array_equal(sparse_index.expand(6, positions, symbols, table), want)


def test_pack_bits_hand_example():
    assert pack_bits(np.array([1, 2, 3]), 2) == bytes([0b01101100])
    assert pack_bits(np.array([0xABC]), 12) == bytes([0xAB, 0xC0])
    np.testing.assert_array_equal(unpack_bits(bytes([0b01101100]), 2, 3), [1, 2, 3])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 16), st.lists(st.integers(0, 2**16 - 1), max_size=500))
def test_pack_round_trip_every_width(num_bits, values):
    values = np.array(values, dtype=np.int64) % (1 << num_bits)
    data = pack_bits(values, num_bits)
    assert len(data) == (values.size * num_bits + 7) // 8
    np.testing.assert_array_equal(unpack_bits(data, num_bits, values.size), values)


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError, match=r"values must be in \[0, 8\) for num_bits=3"):
        pack_bits(np.array([8]), 3)
    with pytest.raises(ValueError, match="need 2 bytes, got 1"):
        unpack_bits(b"\0", 4, 3)
