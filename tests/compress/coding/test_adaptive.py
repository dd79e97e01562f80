"""The adaptive context coder (compress/coding/adaptive.py, the .sqz version-7 "adaptive"
streams): exact round trips with and without contexts, fewer bytes than a static table where
the symbols' distribution depends on their neighbours, the same bytes compiled or interpreted,
and errors on streams that do not decode to their end or contexts out of range."""
import numpy as np
import pytest
from entropy_helpers import entropy_bytes, skewed
from hypothesis import given, settings
from hypothesis import strategies as st

from squeezelab.compress.coding import adaptive
from squeezelab.compress.coding.adaptive import adaptive_decode, adaptive_encode, contexts_of
from squeezelab.compress.coding.ans import AnsError, length_table, pack_table
from squeezelab.compress.coding.rans import rans_encode


def _signed_neighbours(n=20_000, seed=0):
    """Symbols 0-7 (0-3 'negative', 4-7 'positive') whose sign follows the previous one's
    nine times in ten: a source a static table cannot see and one neighbour context can."""
    rng = np.random.default_rng(seed)
    sign = np.empty(n, dtype=np.int64)
    sign[0] = 0
    flips = rng.random(n) < 0.1
    for i in range(1, n):
        sign[i] = sign[i - 1] ^ flips[i]
    return sign * 4 + rng.integers(0, 4, size=n)


def test_round_trip_in_one_context_costs_about_the_entropy_without_a_table():
    symbols = skewed()
    data = adaptive_encode(symbols, 16)
    assert np.array_equal(adaptive_decode(data, symbols.size, 16), symbols)
    # what learning the distribution costs, against the static coder's table and rounding
    static = len(rans_encode(symbols, length_table(symbols, 16))) + len(
        pack_table(length_table(symbols, 16)))
    assert len(data) < 1.01 * entropy_bytes(symbols) + 16
    assert len(data) <= static + 16


def test_neighbour_contexts_code_a_sign_correlated_source_smaller_and_exactly():
    symbols = _signed_neighbours()
    klass = np.where(np.arange(8) < 4, 1, 2)
    first = np.arange(-1, symbols.size - 1)  # the symbol before
    plain = adaptive_encode(symbols, 8)
    data = adaptive_encode(symbols, 8, first=first, klass=klass, num_contexts=9)
    assert np.array_equal(
        adaptive_decode(data, symbols.size, 8, first=first, klass=klass, num_contexts=9),
        symbols)
    # 3 bits a symbol without the context; 2 + H(0.1) = 2.47 with it
    assert len(plain) > 0.99 * symbols.size * 3 / 8
    assert len(data) < 0.87 * len(plain)


def test_contexts_of_adds_base_and_both_neighbours_classes():
    symbols = np.array([0, 1, 1, 0])
    klass = np.array([1, 2])
    base = np.array([0, 9, 9, 18])
    first = np.array([-1, 0, 1, -1])
    second = np.array([-1, -1, 0, 2])
    # symbol 1: 9 + 3 * klass[0]; symbol 2: 9 + 3 * klass[1] + klass[0]; symbol 3: 18 + klass[1]
    assert contexts_of(symbols, base, first, second, klass).tolist() == [0, 12, 16, 20]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.data())
def test_random_streams_round_trip(data):
    nsym = data.draw(st.integers(1, 300))
    n = data.draw(st.integers(0, 400))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    symbols = rng.integers(0, nsym, size=n)
    groups = data.draw(st.integers(1, 3))
    base = rng.integers(0, groups, size=n) * 9
    first = np.array([rng.integers(-1, i) if i else -1 for i in range(n)], dtype=np.int64)
    second = np.array([rng.integers(-1, i) if i else -1 for i in range(n)], dtype=np.int64)
    klass = rng.integers(0, 3, size=nsym)
    stream = adaptive_encode(symbols, nsym, base, first, second, klass, 9 * groups)
    back = adaptive_decode(stream, n, nsym, base, first, second, klass, 9 * groups)
    assert np.array_equal(back, symbols)


def test_compiled_and_interpreted_kernels_write_and_read_the_same_bytes(monkeypatch):
    symbols = _signed_neighbours(n=1500, seed=1)
    klass = np.where(np.arange(8) < 4, 1, 2)
    first = np.arange(-1, symbols.size - 1)
    data = adaptive_encode(symbols, 8, first=first, klass=klass, num_contexts=9)
    adaptive._compiled()  # the helpers compiled: the interpreted kernel must use its own
    for name in ("_rebuild", "_halve", "_new_model"):
        helper = getattr(adaptive, name)
        monkeypatch.setattr(adaptive, name, getattr(helper, "py_func", helper))
    monkeypatch.setattr(adaptive, "_KERNEL", adaptive._kernel)
    assert adaptive_encode(symbols, 8, first=first, klass=klass, num_contexts=9) == data
    back = adaptive_decode(data, symbols.size, 8, first=first, klass=klass, num_contexts=9)
    assert np.array_equal(back, symbols)


def test_counts_are_halved_and_a_changing_source_is_followed():
    """Past COUNT_LIMIT the counts halve, so a source that changes halfway is learnt again:
    the stream stays exact and costs well under a static table's mixture of both halves."""
    rng = np.random.default_rng(3)
    n = 3 * adaptive.COUNT_LIMIT // adaptive.INCREMENT
    symbols = np.concatenate([rng.integers(0, 4, size=n), rng.integers(4, 8, size=n)])
    data = adaptive_encode(symbols, 8)
    assert np.array_equal(adaptive_decode(data, symbols.size, 8), symbols)
    assert len(data) < 0.8 * symbols.size * 3 / 8  # the mixture: 3 bits; each half: 2


def test_damaged_streams_and_wrong_counts_are_refused():
    symbols = skewed(n=5000)
    data = adaptive_encode(symbols, 16)
    with pytest.raises(AnsError, match="ends before"):
        adaptive_decode(data[:len(data) // 2 // 2 * 2], symbols.size, 16)
    with pytest.raises(AnsError, match="holds more"):
        adaptive_decode(data, symbols.size - 1, 16)
    with pytest.raises(AnsError, match="holds more|ends before"):
        adaptive_decode(data + b"\x01\x00", symbols.size, 16)
    with pytest.raises(AnsError, match="whole 16-bit words"):
        adaptive_decode(data[:-1], symbols.size, 16)
    with pytest.raises(AnsError, match="below 2 \\*\\* 16"):
        adaptive_decode(b"\x00\x00\x00\x01" + data[4:], symbols.size, 16)
    with pytest.raises(AnsError, match="bytes for no symbols"):
        adaptive_decode(data, 0, 16)
    assert adaptive_encode([], 16) == b"" and adaptive_decode(b"", 0, 16).size == 0
    # an alphabet a file got wrong is the stream's error, not the caller's (found by fuzzing)
    with pytest.raises(AnsError, match="1 to 4096 symbols, got 0"):
        adaptive_decode(data, symbols.size, 0)


def test_bad_contexts_and_alphabets_are_refused():
    symbols = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="earlier symbol"):
        adaptive_encode(symbols, 3, first=np.array([-1, 1, 0]), klass=np.ones(3, int),
                        num_contexts=9)
    with pytest.raises(ValueError, match="range\\(3\\)"):
        adaptive_encode(symbols, 3, klass=np.array([0, 1, 3]), num_contexts=9)
    with pytest.raises(ValueError, match="context must be in range\\(4\\)"):
        adaptive_encode(symbols, 3, first=np.array([-1, 0, 1]), klass=np.full(3, 2),
                        num_contexts=4)
    with pytest.raises(ValueError, match="range\\(3\\)"):
        adaptive_encode(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="1 to 4096 symbols"):
        adaptive_encode(symbols, adaptive.MAX_SYMBOLS + 1)
    with pytest.raises(ValueError, match="at most 65536"):
        adaptive_encode(symbols, 4096, num_contexts=17)
    data = adaptive_encode(symbols, 3)
    with pytest.raises(ValueError, match="contexts outside range\\(1\\)"):
        adaptive_decode(data, 3, 3, first=np.array([-1, 0, 1]), klass=np.ones(3, int))
