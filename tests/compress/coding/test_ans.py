"""rANS coding (compress/coding/ans.py): exact round trips, cost within a hair of the entropy,
quarter-bit length tables, and errors on streams that do not decode to their end."""
import numpy as np
import pytest
from entropy_helpers import entropy_bytes, skewed

from squeezelab.compress.coding.ans import (
    AnsError,
    AnsReader,
    ans_decode,
    ans_decode_segments,
    ans_encode,
    ans_encode_segments,
    length_table,
    pack_table,
    table_bytes,
    uniform_table,
    unpack_table,
    unpack_tables,
)
from squeezelab.compress.coding.huffman import huffman_encode


def test_round_trip_is_exact_and_costs_the_entropy():
    symbols = skewed()
    codes = length_table(symbols, 16)
    data = ans_encode(symbols, codes)
    assert np.array_equal(ans_decode(data, codes, symbols.size), symbols)
    # quarter-bit lengths and the 32-bit flush cost well under 1% over the entropy ...
    assert entropy_bytes(symbols) <= len(data) <= 1.005 * entropy_bytes(symbols) + 8
    # ... where Huffman's whole bits cost more on the same stream
    huffman_data, _ = huffman_encode(symbols, 16)
    assert len(data) < len(huffman_data)


def test_length_table_quarter_bits_and_absent_symbols():
    symbols = np.array([0] * 8 + [1] * 4 + [3] * 4)  # p = 1/2, 1/4, absent, 1/4
    codes = length_table(symbols, 5)
    # code = 4 * (-log2 p) + 1, 0 for an absent symbol
    assert codes.tolist() == [5, 9, 0, 9, 0]
    assert unpack_table(pack_table(codes), 5).tolist() == codes.tolist()
    assert table_bytes(5) == 4 and len(pack_table(codes)) == 4
    rare = length_table(np.array([0] * 100_000 + [1]), 2)
    assert rare.tolist()[1] == 63  # -log2 p = 16.6 bits, capped at 15.5
    with pytest.raises(ValueError, match="nonzero code"):
        ans_encode(np.array([2]), codes)
    with pytest.raises(ValueError, match=r"outside range\(3\)"):
        length_table(np.array([0, 5]), 3)


def test_empty_and_single_symbol_streams():
    codes = np.array([1], dtype=np.uint8)
    assert ans_encode(np.zeros(0, np.int64), codes) == b""
    assert ans_decode(b"", codes, 0).size == 0
    ones = np.zeros(1000, np.int64)  # a certain symbol costs nothing but the flush
    data = ans_encode(ones, length_table(ones, 1))
    assert len(data) <= 8
    assert np.array_equal(ans_decode(data, length_table(ones, 1), 1000), ones)


def test_streams_that_do_not_end_where_they_should_are_refused():
    symbols = skewed(5_000)
    codes = length_table(symbols, 16)
    data = ans_encode(symbols, codes)
    with pytest.raises(AnsError, match="holds more than 4999 symbols"):
        ans_decode(data, codes, symbols.size - 1)
    with pytest.raises(AnsError, match="whole 32-bit words, got 7 bytes"):
        ans_decode(data[:7], codes, symbols.size)
    with pytest.raises(AnsError, match="not an ANS stream"):
        ans_decode(data[:-4] + b"\0\0\0\0", codes, symbols.size)
    with pytest.raises(AnsError, match="4 bytes for no symbols"):
        ans_decode(data[:4], codes, 0)
    with pytest.raises(AnsError, match="a table of 16 symbols has 12 bytes, got 11"):
        unpack_table(pack_table(codes)[:-1], 16)
    with pytest.raises(AnsError, match="no symbol"):
        unpack_table(bytes(12), 16)


def test_a_layers_context_tables_unpack_together_as_one_by_one():
    """``unpack_tables``: a layer's tables, packed one after another (each padded to whole
    bytes), read in one pass exactly as each would be alone; a wrong length or a table
    without a symbol is refused."""
    rng = np.random.default_rng(0)
    for num_symbols in (1, 3, 11, 64, 65):  # 6-bit codes: 3 and 11 symbols end mid-byte
        tables = rng.integers(0, 64, size=(4, num_symbols)).astype(np.uint8)
        tables[:, 0] |= 1
        packed = b"".join(pack_table(t) for t in tables)
        assert np.array_equal(unpack_tables(packed, num_symbols, 4), tables)
        assert np.array_equal(unpack_table(pack_table(tables[2]), num_symbols), tables[2])
    with pytest.raises(AnsError, match="4 tables of 11 symbols have 36 bytes, got 35"):
        unpack_tables(bytes(35), 11, 4)
    empty_row = b"".join(pack_table(t) for t in (tables[0], np.zeros(65, np.uint8)))
    with pytest.raises(AnsError, match="no symbol"):
        unpack_tables(empty_row, 65, 2)


def test_segments_each_under_their_own_table_read_back_in_order():
    a, b = skewed(3_000, seed=1), skewed(2_000, seed=2)
    ta, tb = length_table(a, 16), length_table(b, 16)
    data = ans_encode_segments([(a, ta), (np.zeros(0, np.int64), ta), (b, tb)])
    back = ans_decode_segments(data, [(ta, a.size), (ta, 0), (tb, b.size)])
    assert np.array_equal(back[0], a) and back[1].size == 0 and np.array_equal(back[2], b)
    # one stream of two segments is no larger than the two streams apart
    assert len(data) <= len(ans_encode(a, ta)) + len(ans_encode(b, tb))
    # the reader: a segment's count may be decided after the one before it is read
    reader = AnsReader(data)
    assert np.array_equal(reader.read(ta, a.size), a)
    assert np.array_equal(reader.read(tb, b.size), b)
    reader.close()
    reader = AnsReader(data)
    reader.read(ta, a.size)
    with pytest.raises(AnsError, match="holds more than"):
        reader.close()  # b is still in it
    groups = np.array([2, 0, 1, 2])
    assert np.array_equal(ans_decode(ans_encode(groups, uniform_table(3)), uniform_table(3), 4),
                          groups)
    assert len(ans_encode(groups, uniform_table(3))) == 4  # 4 * log2(3) bits: one word
