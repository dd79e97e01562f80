"""Our own rANS coder (Duda 2013, arXiv 1311.2540), the coder of the .sqz file's version-6
ANS streams: the same models as ``ans.py`` (one quarter-bit length table per segment), coded
with integer frequencies this module defines and decoded by table lookup.

Why not constriction, which codes versions 3-5: its decoder finds each symbol by a binary
search over the model's cumulative frequencies, about 34 ns a symbol, and that was 60% of
loading a squeezenet1_0-sized file. Here the symbol is one lookup in a table of
``2 ** precision`` entries, a long stream interleaves four coder states so that the CPU works
on four symbols at once (Giesen's interleaved rANS), and the loop is compiled by numba (a
dependency; cached on disk after the first compile): about 2 ns a symbol. Were numba missing,
the same loop runs as Python, so a file decodes the same everywhere, ~5 us a symbol.

The stream: little-endian 16-bit words. ``num_states(total)`` 32-bit states (4 for a stream
of 8,192 symbols or more, else 1), each renormalised to ``[2 ** 16, 2 ** 32)`` one word at a
time; the stream opens with the decoder's initial states (state 0 first, high word first) and
ends when all are back at ``2 ** 16``, where the encoder started them, with every word read: a
check that the stream was consumed exactly. Symbol ``i`` (counted over the whole stream,
across segments) uses state ``i % num_states``.

The model of a length table: each present symbol's weight ``2 ** (-(q - 1) / 4)`` in integer
fixed point (``_QUARTER``), frequencies ``max(1, floor(weight * 2 ** precision / total))``, and
the rounding's surplus or shortfall taken from or given to the largest frequencies, so they sum
to ``2 ** precision`` exactly. Integer arithmetic only, so encoder and decoder agree on every
machine. Absent symbols get no frequency: a damaged stream cannot decode to one.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from squeezelab.compress.coding.ans import AnsError, coded_segments

STATE_LOW = 1 << 16  # states live in [STATE_LOW, 2 ** 32)
FOUR_STATES_FROM = 8192  # streams of this many symbols or more interleave four states
# 2 ** (-k / 4) for k = 0..3 in 16-bit fixed point: the quarter-bit steps of a length table
_QUARTER = np.array([65536, 55109, 46341, 38968], dtype=np.int64)


def precision_bits(present: int) -> int:
    """The frequencies' precision for a table of ``present`` symbols: 14 bits (lookup tables
    of 16,384 entries) up to 1,024 symbols, more for larger alphabets, at most 16."""
    return int(min(16, max(14, (max(present, 1) - 1).bit_length() + 4)))


def frequencies(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """(integer frequency per symbol, summing to ``2 ** precision``; the precision) of a
    length table (``ans.length_table``'s codes, 0 = absent)."""
    freq, bits = frequencies_many(np.asarray(codes)[None])
    return freq[0], int(bits[0])


def frequencies_many(tables: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``frequencies`` of each row of ``tables`` (length tables of one alphabet), at once:
    (frequencies ``[rows, symbols]``, precision per row)."""
    codes = np.ascontiguousarray(tables, dtype=np.int64)
    freq = np.zeros(codes.shape, dtype=np.int64)
    bits = np.zeros(codes.shape[0], dtype=np.int64)
    if _compiled()[3](codes, freq, bits) >= 0:
        raise AnsError("the length table has no symbol")
    return freq, bits


def _frequencies_kernel(codes, freq, bits):  # pragma: no cover - numba compiles it
    """Fill ``freq`` and ``bits`` for each row of ``codes``; returns the first row without a
    symbol, else -1. Per row: the precision (``precision_bits``), each present symbol's
    weight ``2 ** (16 - k / 4)`` in integer fixed point (k: its code - 1, at most 62, so a
    weight is at most 2 ** 32 and ``weight << bits`` stays below 2 ** 63 for any row),
    ``max(1, floor(weight * 2 ** bits / total))``; then a shortfall goes to the first most
    probable symbol, and a surplus (from rounding rare symbols up to 1) is taken from the
    largest frequency in turn, half of it at most, so that every present symbol keeps 1."""
    rows, nsym = codes.shape
    for r in range(rows):
        count = 0
        total = 0
        for s in range(nsym):
            if codes[r, s] > 0:
                count += 1
                k = codes[r, s] - 1
                total += _QUARTER[k & 3] << (16 - (k >> 2))
        if count == 0:
            return r
        length = 0
        v = count - 1
        while v > 0:
            length += 1
            v >>= 1
        b = min(16, max(14, length + 4))
        bits[r] = b
        assigned = 0
        best = 0
        for s in range(nsym):
            if codes[r, s] > 0:
                k = codes[r, s] - 1
                f = ((_QUARTER[k & 3] << (16 - (k >> 2))) << b) // total
                f = max(f, 1)
                freq[r, s] = f
                assigned += f
                if f > freq[r, best]:
                    best = s
        excess = assigned - (1 << b)
        if excess <= 0:
            freq[r, best] -= excess
        while excess > 0:
            top = 0
            for s in range(nsym):
                if freq[r, s] > freq[r, top]:
                    top = s
            take = min(excess, freq[r, top] // 2)
            freq[r, top] -= take
            excess -= take
    return -1


def num_states(total: int) -> int:
    """Coder states a stream of ``total`` symbols interleaves: 4 from 8,192 symbols (the CPU
    overlaps four decodes: twice as fast), else 1 (each state costs 4 bytes to flush: 12 more
    bytes are under 0.3% of a stream that long)."""
    return 4 if total >= FOUR_STATES_FROM else 1


class Models:
    """What the kernels need of the length tables of a stream's segments (rows of one
    alphabet): frequencies and cumulative frequencies per row, and each row's precision."""

    def __init__(self, tables: np.ndarray) -> None:
        self.freq, self.bits = frequencies_many(tables)
        self.cum = np.cumsum(self.freq, axis=1) - self.freq


def _encode_kernel(freqs, cums, bits, states, out):  # pragma: no cover - numba compiles it
    """Encode the symbols whose frequencies, cumulative frequencies and precisions are given
    (in stream order) with ``states.size`` interleaved states (symbol i uses state i % n),
    into ``out`` (16-bit words, the stream reversed); returns the number of words."""
    n_states = states.size
    for j in range(n_states):
        states[j] = STATE_LOW
    n = 0
    for i in range(freqs.size - 1, -1, -1):
        f = freqs[i]
        j = i % n_states
        x = states[j]
        limit = ((STATE_LOW >> bits[i]) << 16) * f
        while x >= limit:
            out[n] = x & 0xFFFF
            n += 1
            x >>= 16
        states[j] = ((x // f) << bits[i]) + x % f + cums[i]
    for j in range(n_states - 1, -1, -1):  # reversed: state 0's high word opens the stream
        out[n] = states[j] & 0xFFFF
        out[n + 1] = states[j] >> 16
        n += 2
    return n


# The decoders find a symbol from its slot ``x mod 2 ** bits`` by a table of every slot,
# filled per segment, where the segment has enough symbols to pay for filling it (always in a
# four-state stream: 8,192 symbols or more), else by binary search over the cumulative
# frequencies: a file of many small segments would otherwise spend its time filling tables.
# A table entry packs what the step needs (symbol, frequency, slot - cumulative frequency)
# into one int64, so one load follows the slot instead of three dependent ones; and the
# renormalisation is a select, not a branch (it happens every second or third symbol, at
# random: a branch there is mispredicted half the time). Together 1.7x faster than a table of
# symbols with a branch (2.9 -> 1.7 ms for 836,000 6-bit indices, one core). The select reads
# a word even when it keeps the state, so at the stream's end it reads the last word again;
# running out of words is caught after each segment. Two loops rather than a test inside one:
# the loop is the whole cost.

_SYMBOL_SHIFT, _FREQ_SHIFT, _FIELD = 40, 20, (1 << 20) - 1  # frequencies are <= 2 ** 16


def _fill_table(freq, g, lut):  # pragma: no cover - numba compiles it
    """``lut[slot]`` for every slot of model row ``g``: its symbol, the symbol's frequency and
    the slot's offset in the symbol's range, packed (``_SYMBOL_SHIFT``, ``_FREQ_SHIFT``)."""
    k = 0
    for s in range(freq.shape[1]):
        f = freq[g, s]
        for j in range(f):
            lut[k] = (s << _SYMBOL_SHIFT) | (f << _FREQ_SHIFT) | j
            k += 1


def _decode1_kernel(words, pos, x, counts, runs, starts, lengths, freq, cum, bits, lut,
                    out):  # pragma: no cover - numba compiles it
    """Decode segments of ``counts[g]`` symbols under model row ``g`` in turn, from word
    ``pos`` of a one-state stream with state ``x`` (``words``: its 16-bit words, at least one),
    into ``out``: segment ``g`` is ``runs[g]`` runs, the next run's ``lengths[r]`` symbols
    going to ``out[starts[r]:]`` (one run a segment, back to back, for a plain stream; a
    filter's indices each for a layer coded in contexts, which so land in filter order with
    no copy). Returns (pos, x), pos -1 when the stream ran out."""
    size = words.size
    nsym = freq.shape[1]
    r = 0
    for g in range(counts.size):
        b = bits[g]
        mask = (1 << b) - 1
        table = 4 * counts[g] >= (1 << b)
        if table:
            _fill_table(freq, g, lut)
        for _ in range(runs[g]):
            o = starts[r]
            n = lengths[r]
            r += 1
            if table:
                for k in range(o, o + n):
                    e = lut[x & mask]
                    out[k] = e >> _SYMBOL_SHIFT
                    x = ((e >> _FREQ_SHIFT) & _FIELD) * (x >> b) + (e & _FIELD)
                    need = x < STATE_LOW
                    w = np.int64(words[min(pos, size - 1)])
                    x = ((x << 16) | w) if need else x
                    pos += need
            else:
                for k in range(o, o + n):
                    slot = x & mask
                    lo, hi = 0, nsym  # the last symbol whose range starts at or below the slot
                    while hi - lo > 1:
                        mid = (lo + hi) >> 1
                        if cum[g, mid] <= slot:
                            lo = mid
                        else:
                            hi = mid
                    out[k] = lo
                    x = freq[g, lo] * (x >> b) + slot - cum[g, lo]
                    need = x < STATE_LOW
                    w = np.int64(words[min(pos, size - 1)])
                    x = ((x << 16) | w) if need else x
                    pos += need
        if pos > size:
            return -1, x
    return pos, x


def _decode4_kernel(words, pos, x0, x1, x2, x3, counts, runs, starts, lengths, freq, cum,
                    bits, lut, out):  # pragma: no cover - numba compiles it
    """As ``_decode1_kernel`` for four states, ``x0`` the next symbol's, finding symbols by
    ``lut`` (filled per segment); the states rotate after every symbol, across runs and
    segments (kept in registers, not an array: what makes the four overlap)."""
    size = words.size
    r = 0
    for g in range(counts.size):
        b = bits[g]
        mask = (1 << b) - 1
        _fill_table(freq, g, lut)
        for _ in range(runs[g]):
            o = starts[r]
            n = lengths[r]
            r += 1
            for k in range(o, o + n):
                e = lut[x0 & mask]
                out[k] = e >> _SYMBOL_SHIFT
                x0 = ((e >> _FREQ_SHIFT) & _FIELD) * (x0 >> b) + (e & _FIELD)
                need = x0 < STATE_LOW
                w = np.int64(words[min(pos, size - 1)])
                x0 = ((x0 << 16) | w) if need else x0
                pos += need
                x0, x1, x2, x3 = x1, x2, x3, x0
        if pos > size:
            return -1, x0, x1, x2, x3
    return pos, x0, x1, x2, x3


def _compiled():
    """The kernels, compiled by numba where it is installed (cached on disk), else as Python.
    Under a lock: decoding threads may ask at once, and ``_fill_table`` is compiled once."""
    global _KERNELS, _fill_table
    with _COMPILING:
        if _KERNELS is not None:
            return _KERNELS
        kernels = (_encode_kernel, _decode1_kernel, _decode4_kernel, _frequencies_kernel)
        try:
            import numba
        except ImportError:
            _KERNELS = (*kernels, False)
        else:
            def jit(f):
                return numba.njit(cache=True, nogil=True)(f)

            # the kernels call it: compiled first, so that they find the compiled one
            _fill_table = jit(_fill_table)
            _KERNELS = (*(jit(k) for k in kernels), True)
        return _KERNELS


_KERNELS = None
_COMPILING = threading.Lock()
_ONE, _ZERO = np.ones(1, dtype=np.int64), np.zeros(1, dtype=np.int64)  # a one-run segment


def compiled() -> bool:
    """Whether the coder runs compiled (numba importable)."""
    return _compiled()[4]


def rans_encode_segments(segments: Sequence[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """One stream of several segments, each ``(symbols, codes)``: its symbols under its own
    length table. ``RansReader`` reads them back in this order. Empty for no symbols."""
    freqs, cums, bits = [], [], []
    for symbols, codes in coded_segments(segments, np.int64):
        model = Models(codes[None])
        freqs.append(model.freq[0, symbols])
        cums.append(model.cum[0, symbols])
        bits.append(np.full(symbols.size, model.bits[0], dtype=np.int64))
    if not freqs:
        return b""
    freq, cum, bit = (np.concatenate(a).astype(np.int64) for a in (freqs, cums, bits))
    return encode_frequencies(freq, cum, bit)


def encode_frequencies(freq: np.ndarray, cum: np.ndarray, bits: np.ndarray | int,
                       interleave: int | None = None) -> bytes:
    """The stream of symbols given by their frequency, cumulative frequency and precision
    (per symbol, in stream order; ``bits`` one for all or one a symbol), with ``interleave``
    states (default: ``num_states(len(freq))``). Whatever model gave the
    frequencies (a length table here, an adaptive model in ``adaptive.py``), the decoder
    must give the same ones."""
    freq = np.ascontiguousarray(freq, dtype=np.int64)
    bits = np.broadcast_to(np.asarray(bits, dtype=np.int64), freq.shape).copy()
    states = np.empty(num_states(freq.size) if interleave is None else interleave,
                      dtype=np.int64)
    out = np.empty(2 * freq.size + 2 * states.size, dtype=np.int64)  # <= 2 words a symbol
    n = _compiled()[0](freq, np.ascontiguousarray(cum, dtype=np.int64), bits, states, out)
    return out[:n][::-1].astype("<u2").tobytes()


def rans_encode(symbols: np.ndarray, codes: np.ndarray) -> bytes:
    """``symbols`` (each present in ``codes``) as a stream; empty for no symbols."""
    return rans_encode_segments([(symbols, codes)])


class RansReader:
    """Reads a ``rans_encode_segments`` stream of ``total`` symbols one segment at a time, for
    a decoder whose next segment's table or count depends on the symbols before it
    (``ans.AnsReader``'s interface; here ``total`` is needed: it says how many states the
    stream interleaves). ``close()`` checks that the stream ended exactly there."""

    def __init__(self, data: bytes, total: int) -> None:
        self.total = total
        if total == 0 and data:
            raise AnsError(f"{len(data)} bytes for no symbols")
        if len(data) % 2:
            raise AnsError(f"a rANS stream is whole 16-bit words, got {len(data)} bytes")
        self._words = np.frombuffer(data, dtype="<u2")  # no copy: the kernels read it as is
        self._size = self._words.size
        self._states = num_states(total)
        self._pos = -1  # the states are read on the first read()
        self._x: tuple[int, ...] = ()  # the states, the next symbol's first

    def read(self, codes: np.ndarray, count: int) -> np.ndarray:
        """The next ``count`` symbols (int32), under the length table ``codes``."""
        return self.read_many([codes], [count])[0]

    def read_many(self, tables: Sequence[np.ndarray], counts: Sequence[int],
                  ) -> list[np.ndarray]:
        """The next segments in turn, ``counts[g]`` symbols under the length table
        ``tables[g]`` (all of one alphabet): one call into the decoder for all of them."""
        counts = np.asarray(counts, dtype=np.int64)
        out = np.empty(int(counts.sum()), dtype=np.int32)
        if counts.size == 1:  # one run; the usual case, so spared building the runs
            self._decode(tables, counts, _ONE, _ZERO, counts, out)
            return [out]
        self._decode(tables, counts, np.ones(counts.size, dtype=np.int64),
                     np.cumsum(counts) - counts, counts, out)
        return np.split(out, np.cumsum(counts)[:-1])

    def read_into(self, tables: Sequence[np.ndarray] | np.ndarray, runs: np.ndarray,
                  starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
        """The next segments in turn into ``out`` (int32): segment ``g``, under the length
        table ``tables[g]`` (all of one alphabet; or the rows of one array), is ``runs[g]``
        runs, run ``r`` its ``lengths[r]`` symbols written at ``out[starts[r]:]``. The runs
        must cover ``out`` exactly once (ValueError otherwise: the kernel writes unchecked),
        so a layer coded in filter groups decodes straight into filter order."""
        runs, starts, lengths = (np.ascontiguousarray(a, dtype=np.int64)
                                 for a in (runs, starts, lengths))
        if (runs.size != len(tables) or int(runs.sum()) != starts.size
                or lengths.size != starts.size or not _covers(starts, lengths, out.size)):
            raise ValueError("the runs must cover the output exactly once, in segments of "
                             "one table each")
        ends = np.concatenate(([0], np.cumsum(lengths)))[np.cumsum(runs)]
        self._decode(tables, np.diff(ends, prepend=0), runs, starts, lengths, out)

    def _decode(self, tables: Sequence[np.ndarray] | np.ndarray, counts: np.ndarray,
                runs: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                out: np.ndarray) -> None:
        """The kernel's call, ``counts[g]`` the symbols of segment ``g`` (its runs' sum)."""
        if out.size == 0:
            return
        if self._pos < 0:
            w, n = self._words, self._states
            if self._size < 2 * n:
                raise AnsError(f"a rANS stream of {self.total} symbols opens with {n} 32-bit "
                               f"states, got {self._size * 2} bytes")
            self._x = tuple(int(w[2 * j]) << 16 | int(w[2 * j + 1]) for j in range(n))
            if min(self._x) < STATE_LOW:
                raise AnsError("not a rANS stream: a state below 2 ** 16")
            self._pos = 2 * n
        models = Models(tables if isinstance(tables, np.ndarray) else np.stack(tables))
        lut = np.empty(1 << int(models.bits.max()), dtype=np.int64)
        kernel = _compiled()[1 if self._states == 1 else 2]
        pos, *x = kernel(self._words, self._pos, *self._x, counts, runs, starts, lengths,
                         models.freq, models.cum, models.bits, lut, out)
        if pos < 0:
            raise AnsError(f"the stream ends before its {self.total} symbols (damaged, or a "
                           "wrong count)")
        self._pos, self._x = int(pos), tuple(int(v) for v in x)

    def close(self) -> None:
        if self._pos < 0:
            if self._size:
                raise AnsError(f"{self._size * 2} bytes for no symbols")
            return
        if self._pos != self._size or any(v != STATE_LOW for v in self._x):
            raise AnsError(f"the stream holds more than {self.total} symbols, or other ones "
                           "(damaged, or a wrong count)")


def _covers(starts: np.ndarray, lengths: np.ndarray, size: int) -> bool:
    """Whether runs ``[starts[r], starts[r] + lengths[r])`` tile ``range(size)`` exactly."""
    if starts.size == 0:
        return size == 0
    if int(lengths.min()) < 0:
        return False
    order = np.lexsort((lengths, starts))  # an empty run before a full one at its start
    s, n = starts[order], lengths[order]
    return bool(s[0] == 0 and s[-1] + n[-1] == size and np.array_equal(s[1:], (s + n)[:-1]))


def rans_decode(data: bytes, codes: np.ndarray, count: int) -> np.ndarray:
    """``count`` symbols (int32) from a ``rans_encode`` stream; ``AnsError`` when it does not
    decode to exactly its end."""
    reader = RansReader(data, count)
    out = reader.read(codes, count)
    reader.close()
    return out


__all__ = ["FOUR_STATES_FROM", "Models", "RansReader", "STATE_LOW", "compiled",
           "encode_frequencies", "frequencies", "frequencies_many", "num_states",
           "precision_bits", "rans_decode", "rans_encode", "rans_encode_segments"]
