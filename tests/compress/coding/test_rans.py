"""Our own rANS (compress/coding/rans.py, the .sqz version-6 ANS streams): exact round trips
over segments, tables and counts, integer frequencies that sum exactly, the same bytes compiled
or interpreted, a cost within bytes of constriction's, and errors on streams that do not decode
to their end."""
import numpy as np
import pytest
from entropy_helpers import entropy_bytes, skewed
from hypothesis import given, settings
from hypothesis import strategies as st

from squeezelab.compress.coding import rans
from squeezelab.compress.coding.ans import AnsError, ans_encode, length_table, uniform_table
from squeezelab.compress.coding.rans import (
    RansReader,
    frequencies,
    precision_bits,
    rans_decode,
    rans_encode,
    rans_encode_segments,
)


def test_round_trip_is_exact_and_costs_the_entropy_as_constriction_does():
    symbols = skewed()
    codes = length_table(symbols, 16)
    data = rans_encode(symbols, codes)
    assert np.array_equal(rans_decode(data, codes, symbols.size), symbols)
    # quarter-bit lengths, 14-bit frequencies and two 32-bit states to flush: within 1% of the
    # entropy, and within a few bytes of constriction's coder on the same table
    assert len(data) < 1.01 * entropy_bytes(symbols) + 8
    assert abs(len(data) - len(ans_encode(symbols, codes))) <= 16


def test_frequencies_sum_exactly_and_follow_the_quarter_bit_lengths():
    freq, bits = frequencies(np.array([1, 5, 0, 9, 1]))  # p ~ 1, 1/2, absent, 1/4, 1
    assert bits == 14 and freq.sum() == 1 << 14
    assert freq[2] == 0 and (freq[[0, 1, 3, 4]] > 0).all()
    # equal lengths, equal frequencies but for the rounding's shortfall (given to the first
    # most probable symbol); a length 4 quarter-bits longer, half the frequency
    assert 0 <= freq[0] - freq[4] <= 4
    assert abs(freq[4] / freq[1] - 2) < 0.01 and abs(freq[1] / freq[3] - 2) < 0.01
    # a lone symbol takes the whole range: it costs nothing to code
    assert frequencies(np.array([0, 7, 0]))[0].tolist() == [0, 1 << 14, 0]
    # many near-absent symbols rounded up to 1 still sum exactly, each keeping at least 1
    codes = np.full(1000, 63, dtype=np.uint8)
    codes[0] = 1
    freq, bits = frequencies(codes)
    assert freq.sum() == 1 << bits and freq.min() >= 1
    assert [precision_bits(n) for n in (1, 1024, 1025, 4096, 4097, 65536)] == [
        14, 14, 15, 16, 16, 16]
    with pytest.raises(AnsError, match="no symbol"):
        frequencies(np.zeros(4, dtype=np.uint8))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 300), st.integers(0, 40), st.integers(0, 2**31 - 1)),
                min_size=1, max_size=4))
def test_segments_of_any_sizes_and_tables_round_trip(specs):
    rng_segments = []
    for alphabet, count, seed in specs:
        rng = np.random.default_rng(seed)
        symbols = rng.integers(0, alphabet, size=count)  # any count, odd or even
        codes = length_table(symbols, alphabet) if count else uniform_table(alphabet)
        rng_segments.append((symbols, codes))
    data = rans_encode_segments(rng_segments)
    total = sum(s.size for s, _ in rng_segments)
    assert (data == b"") == (total == 0)
    reader = RansReader(data, total)
    for symbols, codes in rng_segments:
        assert np.array_equal(reader.read(codes, symbols.size), symbols)
    reader.close()


def test_a_long_stream_interleaves_four_states_across_its_segments():
    """From 8,192 symbols a stream rotates four states (one flush word pair each), and the
    rotation carries on across segments of any length."""
    assert [rans.num_states(n) for n in (1, 8191, 8192)] == [1, 1, 4]
    segments = [(skewed(n=n, k=k, seed=n), None) for n, k in ((10_001, 16), (7, 3), (9_000, 60))]
    segments = [(s, length_table(s, s.max() + 1)) for s, _ in segments]
    data = rans_encode_segments(segments)
    assert np.frombuffer(data[:16], "<u2").size == 8  # four states open the stream
    reader = RansReader(data, sum(s.size for s, _ in segments))
    for symbols, codes in segments:
        assert np.array_equal(reader.read(codes, symbols.size), symbols)
    reader.close()


def test_large_alphabets_take_more_precision_and_still_round_trip():
    rng = np.random.default_rng(1)
    for alphabet in (5000, 65536):
        symbols = rng.integers(0, alphabet, size=3 * alphabet)
        codes = length_table(symbols, alphabet)
        assert frequencies(codes)[1] == 16
        assert np.array_equal(rans_decode(rans_encode(symbols, codes), codes, symbols.size),
                              symbols)


def test_compiled_and_interpreted_kernels_write_and_read_the_same_bytes(monkeypatch):
    symbols = skewed(n=3001, k=40, seed=2)
    codes = length_table(symbols, 40)
    data = rans_encode(symbols, codes)
    long = skewed(n=20_000, k=40, seed=3)  # four states
    long_codes = length_table(long, 40)
    long_data = rans_encode(long, long_codes)
    monkeypatch.setattr(rans, "_KERNELS", (rans._encode_kernel, rans._decode1_kernel,
                                           rans._decode4_kernel, rans._frequencies_kernel,
                                           False))
    assert not rans.compiled()
    assert rans_encode(symbols, codes) == data and rans_encode(long, long_codes) == long_data
    assert np.array_equal(rans_decode(data, codes, symbols.size), symbols)
    assert np.array_equal(rans_decode(long_data, long_codes, long.size), long)


def test_threads_asking_for_the_kernels_at_once_get_one_compiled_set(monkeypatch):
    """A file's first load decodes layers on several threads, which all ask for the kernels
    before any are compiled: each must get the same set (compiling the helper the kernels call
    twice raised a TypeError before ``_compiled`` took a lock)."""
    import threading

    fill = getattr(rans._fill_table, "py_func", rans._fill_table)
    monkeypatch.setattr(rans, "_KERNELS", None)
    monkeypatch.setattr(rans, "_fill_table", fill)
    barrier, got, errors = threading.Barrier(8), [], []

    def ask():
        barrier.wait()
        try:
            got.append(rans._compiled())
        except Exception as e:  # noqa: BLE001 -- recorded, asserted below
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 8 and all(k is got[0] for k in got)
    symbols = skewed(n=20_000, k=40, seed=4)
    codes = length_table(symbols, 40)
    assert np.array_equal(rans_decode(rans_encode(symbols, codes), codes, symbols.size), symbols)


def test_streams_that_do_not_end_where_they_should_are_refused():
    symbols = skewed(n=2000)
    codes = length_table(symbols, 16)
    data = rans_encode(symbols, codes)
    with pytest.raises(AnsError, match="ends before its 2001 symbols"):
        rans_decode(data, codes, symbols.size + 1)
    with pytest.raises(AnsError, match="holds more than 1999 symbols"):
        rans_decode(data, codes, symbols.size - 1)
    with pytest.raises(AnsError, match="holds more than"):
        rans_decode(data + b"\x00\x01", codes, symbols.size)
    with pytest.raises(AnsError, match="ends before"):
        rans_decode(data[:-2], codes, symbols.size)
    with pytest.raises(AnsError, match="whole 16-bit words"):
        rans_decode(data[:-1], codes, symbols.size)
    with pytest.raises(AnsError, match="of 3 symbols opens with 1 32-bit states, got 2 bytes"):
        rans_decode(b"\x01\x00", codes, 3)
    with pytest.raises(AnsError, match="of 20000 symbols opens with 4 32-bit states, got 8"):
        rans_decode(b"\x01\x00" * 4, codes, 20_000)
    with pytest.raises(AnsError, match="a state below"):
        rans_decode(b"\x00\x00" * 4, codes, 3)
    with pytest.raises(AnsError, match="bytes for no symbols"):
        rans_decode(data, codes, 0)
    assert rans_decode(b"", codes, 0).size == 0
    with pytest.raises(ValueError, match="nonzero code"):
        rans_encode(np.array([3]), np.array([1, 1, 1, 0]))


def test_a_damaged_word_is_refused_or_changes_the_symbols():
    """A flipped word cannot pass as the original: it either breaks the end-of-stream check
    or decodes to other symbols (which the .sqz reader's CRC then refuses)."""
    symbols = skewed(n=4000)
    codes = length_table(symbols, 16)
    data = bytearray(rans_encode(symbols, codes))
    for at in (0, 5, len(data) // 2, len(data) - 2):
        damaged = bytearray(data)
        damaged[at] ^= 0x5A
        try:
            out = rans_decode(bytes(damaged), codes, symbols.size)
        except AnsError:
            continue
        assert not np.array_equal(out, symbols)


@pytest.mark.parametrize("states", [1, 4])
def test_runs_of_each_segment_land_where_they_are_told(states):
    """``read_into``: segment g is runs[g] runs written anywhere in the output (a layer's
    filter groups decoded straight into filter order), empty runs and segments included; the
    states carry on across runs as across segments."""
    rng = np.random.default_rng(states)
    lengths = rng.integers(0, 40 if states == 1 else 900, size=30)
    lengths[[3, 17]] = 0
    owner = rng.integers(0, 3, size=30)  # which segment (table) each run is in
    starts = np.cumsum(lengths) - lengths  # where each run goes in the output
    want = np.concatenate([rng.integers(0, 5 + 7 * g, size=n) for g, n in zip(owner, lengths)])
    order = np.argsort(owner, kind="stable")  # the stream holds segment 0's runs, then 1's, ...
    members = [np.concatenate([want[starts[r]:starts[r] + lengths[r]] for r in order
                               if owner[r] == g] + [np.zeros(0, int)]) for g in range(3)]
    tables = [length_table(m, 19) if m.size else uniform_table(19) for m in members]
    data = rans_encode_segments(list(zip(members, tables)))
    assert rans.num_states(want.size) == states
    reader = RansReader(data, want.size)
    out = np.full(want.size, -1, dtype=np.int32)
    reader.read_into(tables, np.bincount(owner, minlength=3), starts[order], lengths[order], out)
    reader.close()
    assert np.array_equal(out, want)


def test_runs_that_do_not_tile_the_output_are_refused():
    symbols = skewed(n=100)
    codes = length_table(symbols, 16)
    out = np.empty(100, dtype=np.int32)
    for starts, lengths in (([0, 50], [50, 49]), ([0, 49], [50, 50]), ([60, 0], [40, 40]),
                            ([0, 100], [100, -1]), ([], [])):
        reader = RansReader(rans_encode(symbols, codes), 100)
        with pytest.raises(ValueError, match="cover the output exactly once"):
            reader.read_into([codes], np.array([len(starts)]), np.array(starts, dtype=np.int64),
                             np.array(lengths, dtype=np.int64), out)
    with pytest.raises(ValueError, match="segments of one table each"):
        RansReader(rans_encode(symbols, codes), 100).read_into(
            [codes, codes], np.array([1]), np.array([0]), np.array([100]), out)
