"""Tests for canonical Huffman coding (Deep Compression, arXiv 1510.00149, section 4)."""
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squeezelab.compress.coding.huffman import (
    MAX_CODE_LENGTH,
    HuffmanError,
    HuffmanTable,
    canonical_codes,
    huffman_code_lengths,
    huffman_decode,
    huffman_decode_many,
    huffman_encode,
)


def test_hand_example_lengths_and_canonical_codes():
    lengths = huffman_code_lengths(np.array([5, 2, 1, 1]))
    assert lengths.tolist() == [1, 2, 3, 3]
    assert canonical_codes(lengths).tolist() == [0b0, 0b10, 0b110, 0b111]
    table = HuffmanTable(lengths)
    data, _ = huffman_encode(np.array([0, 1, 2, 3, 0]), 4, table=table)
    # 0 10 110 111 0 -> 0101 1011 1000 0000 (no lane directory: one lane)
    assert data == bytes([0b01011011, 0b10000000])
    np.testing.assert_array_equal(huffman_decode(data, table, 5), [0, 1, 2, 3, 0])


def test_canonical_property_ordered_and_prefix_free():
    rng = np.random.default_rng(0)
    lengths = huffman_code_lengths(rng.integers(0, 50, size=40))
    codes = canonical_codes(lengths)
    used = [s for s in range(40) if lengths[s]]
    order = sorted(used, key=lambda s: (lengths[s], s))
    as_str = [format(int(codes[s]), f"0{int(lengths[s])}b") for s in order]
    assert as_str == sorted(as_str)  # (length, symbol) order is code order
    for i, a in enumerate(as_str):
        for b in as_str[i + 1:]:
            assert not b.startswith(a)
    assert all(lengths[s] == 0 for s in range(40) if s not in used)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 40), max_size=3000),
    st.integers(1, 700),
)
def test_round_trip_random(symbols, lane_symbols):
    symbols = np.array(symbols, dtype=np.int64)
    data, table = huffman_encode(symbols, 41, lane_symbols=lane_symbols)
    out = huffman_decode(data, table, symbols.size, lane_symbols=lane_symbols)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, symbols)
    restored = HuffmanTable.from_bytes(table.to_bytes(), 41)
    np.testing.assert_array_equal(restored.lengths, table.lengths)


@pytest.mark.parametrize("alpha", [0.05, 0.5, 5.0])
def test_round_trip_skewed_and_entropy_bound(alpha):
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(256, alpha))
    symbols = rng.choice(256, size=20_000, p=p)
    data, table = huffman_encode(symbols, 256)
    np.testing.assert_array_equal(huffman_decode(data, table, symbols.size), symbols)
    counts = np.bincount(symbols, minlength=256)
    freq = counts[counts > 0] / symbols.size
    entropy = float(-(freq * np.log2(freq)).sum())
    avg = table.average_length(counts)
    assert entropy - 1e-9 <= avg <= entropy + 1


def test_length_limit_on_fibonacci_counts():
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    counts = np.array(fib)
    assert huffman_code_lengths(counts).max() == 24  # unlimited depth would be 29
    for limit in (5, 8, 12):
        lengths = huffman_code_lengths(counts, max_length=limit)
        assert lengths.max() == limit
        assert sum(2.0 ** -int(length) for length in lengths) == 1.0  # still a complete prefix code
        # more frequent symbols never get longer codes
        assert np.all(np.diff(lengths[::-1].astype(int)) >= 0)
    symbols = np.repeat(np.arange(30), np.minimum(counts, 500))
    data, table = huffman_encode(symbols, 30, max_length=8)
    np.testing.assert_array_equal(huffman_decode(data, table, symbols.size), symbols)
    with pytest.raises(ValueError, match="cannot have codes of at most 4 bits"):
        huffman_code_lengths(np.ones(17), max_length=4)


def test_one_symbol_and_empty_stream():
    data, table = huffman_encode(np.full(100, 3), 5)
    assert table.lengths.tolist() == [0, 0, 0, 1, 0]
    assert len(data) == 13  # 100 one-bit codes
    np.testing.assert_array_equal(huffman_decode(data, table, 100), np.full(100, 3))
    data, table = huffman_encode(np.zeros(0, dtype=np.int64), 5)
    assert data == b"" and not table.lengths.any()
    assert huffman_decode(b"", table, 0).size == 0


def test_decode_many_matches_single_streams():
    rng = np.random.default_rng(2)
    streams, expected = [], []
    for n, k in [(5000, 7), (0, 3), (1, 2), (1300, 300)]:
        s = rng.integers(0, k, size=n)
        data, table = huffman_encode(s, k, lane_symbols=64)
        streams.append((data, table, n))
        expected.append(s)
    for got, want in zip(huffman_decode_many(streams, lane_symbols=64), expected):
        np.testing.assert_array_equal(got, want)


def test_stream_that_ends_early_or_has_trailing_bytes():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 10, size=3000)
    data, table = huffman_encode(s, 10, lane_symbols=1000)
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(HuffmanError, match="ends early|lane"):
            huffman_decode(data[:cut], table, s.size, lane_symbols=1000)
    with pytest.raises(HuffmanError, match="unused bits"):
        huffman_decode(data + b"\0", table, s.size, lane_symbols=1000)
    with pytest.raises(HuffmanError, match="ends early|impossible lane lengths"):
        huffman_decode(data, table, s.size + 5000, lane_symbols=1000)


def test_invalid_code_and_invalid_tables():
    # one symbol with code "0": a 1 bit is not a code
    table = HuffmanTable(np.array([1, 0], dtype=np.uint8))
    with pytest.raises(HuffmanError, match="not a code"):
        huffman_decode(bytes([0b01000000]), table, 2)
    with pytest.raises(HuffmanError, match="padding bits"):
        huffman_decode(bytes([0b00100000]), table, 2)
    with pytest.raises(HuffmanError, match="Kraft sum 1.5000 > 1"):
        HuffmanTable.from_bytes(HuffmanTable(np.array([1, 1, 1], np.uint8)).to_bytes(), 3)
    with pytest.raises(HuffmanError, match="code lengths must be in"):
        canonical_codes(np.array([MAX_CODE_LENGTH + 1]))
    with pytest.raises(HuffmanError, match="needs 2 bytes, got 1"):
        HuffmanTable.from_bytes(b"\0", 3)
    with pytest.raises(ValueError, match=r"symbols must be in \[0, 4\)"):
        huffman_encode(np.array([0, 4]), 4)


def test_decodes_a_million_symbols_fast():
    rng = np.random.default_rng(4)
    symbols = rng.choice(64, size=1_000_000, p=rng.dirichlet(np.full(64, 0.3)))
    data, table = huffman_encode(symbols, 64)
    start = time.perf_counter()
    out = huffman_decode(data, table, symbols.size)
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(out, symbols)
    # ~0.05 s on an idle core; a loop per bit or per symbol takes 10-100x longer
    assert elapsed < 2.0, f"decoding 1M symbols took {elapsed:.2f} s"
