"""Adaptive context modelling over rANS: the coder of the .sqz file's "adaptive" streams
(version 7), for files smaller than the static tables of ``ans.py``/``rans.py`` allow.

A static coder stores one length table per stream (or per filter group) and codes every symbol
with it. This coder stores no table: encoder and decoder both start each *context* from a
uniform model and learn it from the symbols coded so far, as DeepCABAC does in the MPEG
standard's NNCodec. So a file pays nothing for tables, and it can afford many contexts: a
cluster index is coded in the context of its filter's group (``contexts.group_rows``) and of
the signs of its already-coded neighbours in the kernel, left and above (neighbouring taps of a
3x3 filter tend to share a sign; ``contexts.neighbours``). Measured on the main-job model (72%
pruned, 4-bit conv): indices 5% and gaps 0.3% fewer bytes than static rANS with filter groups
and its tables.

The model of a context: a count per symbol, all 1 at the start; a coded symbol adds
``INCREMENT``; when the counts pass ``COUNT_LIMIT`` they are halved (recent symbols weigh more).
rANS needs frequencies that sum to ``2 ** PRECISION``: they are rebuilt from the counts,
``1 + count * (2 ** PRECISION - nsym) // total`` per symbol with the rounding's shortfall given
to the first most frequent one, after the context's 1st, 2nd, 4th, ... 16th symbol and every
16th after (rebuilding after every symbol would cost a pass over the alphabet per symbol).
Integer arithmetic only: encoder and decoder agree on every machine.

The stream is ``rans.py``'s (16-bit words, one state; it opens with the decoder's state and
ends where the encoder started it), with the frequencies of each symbol given by the model at
that point. Symbol i's context is ``base[i] + CLASSES * c(first[i]) + c(second[i])``
(``contexts_of``): ``base`` and the neighbours ``first``/``second`` are known to the decoder
before the stream (from the positions), the neighbours' classes only as it decodes, so the
decoder runs the model alongside.

Decoding is sequential, a binary search over the context's cumulative frequencies per symbol:
about 18 ns a symbol against the static coder's 2.4 (one core, AVX-512 EPYC). The writer uses
it where a user asks for the smallest file (``coder="smallest"`` or ``"adaptive"``), not by
default.
"""
from __future__ import annotations

import threading

import numpy as np

from squeezelab.compress.coding.ans import AnsError
from squeezelab.compress.coding.rans import encode_frequencies

PRECISION = 16  # frequencies sum to 2 ** 16 (what rans.py's 16-bit renormalisation allows)
# chosen on three compressed SqueezeNets (4- and 6-bit, 67-82% pruned): a count weighs eight
# times the initial one, and the counts are halved after some 30,000 symbols of a context
INCREMENT = 8
COUNT_LIMIT = 1 << 18
#: The largest alphabet an adaptive stream may have: every symbol keeps a frequency of 1 or
#: more out of 2 ** PRECISION, and the decoder holds a model of this many counts per context.
MAX_SYMBOLS = 4096
#: The largest model a stream may have, contexts times alphabet (a reader allocates five
#: int64 arrays of it: 2.6 MB at most).
MAX_MODEL = 1 << 16
#: The classes a neighbour may be in: 0 for none, 1 to CLASSES - 1 from its symbol.
CLASSES = 3
_REBUILD_EVERY = 16
_LOW = 1 << 16
_M = 1 << PRECISION


# The model, as plain functions over its arrays (numba compiles them; they also run as Python,
# so a file decodes where numba is missing, ~100x slower).
def _rebuild(counts, totals, k, freq, cum):  # pragma: no cover - numba compiles it
    nsym = counts.shape[1]
    spare = _M - nsym
    assigned = 0
    best = 0
    for s in range(nsym):
        f = 1 + counts[k, s] * spare // totals[k]
        freq[k, s] = f
        assigned += f
        if f > freq[k, best]:
            best = s
    freq[k, best] += _M - assigned
    c = 0
    for s in range(nsym):
        cum[k, s] = c
        c += freq[k, s]


def _halve(counts, totals, k):  # pragma: no cover - numba compiles it
    t = 0
    for j in range(counts.shape[1]):
        counts[k, j] = (counts[k, j] + 1) >> 1
        t += counts[k, j]
    totals[k] = t


def _new_model(num_contexts, nsym):  # pragma: no cover - numba compiles it
    counts = np.ones((num_contexts, nsym), dtype=np.int64)
    totals = np.full(num_contexts, nsym, dtype=np.int64)
    seen = np.zeros(num_contexts, dtype=np.int64)
    freq = np.empty((num_contexts, nsym), dtype=np.int64)
    cum = np.empty((num_contexts, nsym), dtype=np.int64)
    for k in range(num_contexts):
        _rebuild(counts, totals, k, freq, cum)
    return counts, totals, seen, freq, cum


def _kernel(symbols, base, first, second, klass, num_contexts, words, out_freq,
            out_cum):  # pragma: no cover - numba compiles it
    """Run the model over a stream, both ways in one loop (so that encoder and decoder cannot
    drift apart): with ``words`` empty it *encodes*: it reads ``symbols`` and gives each
    its frequency and cumulative frequency in ``out_freq`` and ``out_cum``; else it *decodes*
    ``words`` into ``symbols``. Returns 0, or when decoding -1 if the stream runs out of words,
    -2 if it holds more than the symbols (not consumed exactly, or a state left over).
    The model's update is written out here, not called: a call per symbol counts references
    to its arrays (atomic operations), 20x slower (measured)."""
    nsym = klass.size
    decode = words.size > 0
    size = words.size
    x = (np.int64(words[0]) << 16) | np.int64(words[1]) if decode else np.int64(0)
    pos = 2
    counts, totals, seen, freq, cum = _new_model(num_contexts, nsym)
    mask = _M - 1
    top = 1  # the highest power of two below nsym
    while 2 * top < nsym:
        top *= 2
    for i in range(symbols.size):
        k = base[i]
        j = first[i]
        if j >= 0:
            k += CLASSES * klass[symbols[j]]
        j = second[i]
        if j >= 0:
            k += klass[symbols[j]]
        if decode:
            slot = x & mask
            # the last symbol whose range starts at or below the slot, by a binary search
            # whose steps are selects, not branches (each branch would be a coin toss)
            s = 0
            step = top
            while step > 0:
                probe = s + step
                s = probe if probe < nsym and cum[k, min(probe, nsym - 1)] <= slot else s
                step >>= 1
            symbols[i] = s
            x = freq[k, s] * (x >> PRECISION) + slot - cum[k, s]
            # renormalise by a select (as rans.py: the branch would be mispredicted half the
            # time); past the end it rereads the last word, and the count shows it
            need = x < _LOW
            w = np.int64(words[min(pos, size - 1)])
            x = ((x << 16) | w) if need else x
            pos += need
        else:
            s = symbols[i]
            out_freq[i] = freq[k, s]
            out_cum[i] = cum[k, s]
        # learn: count the symbol; halve the counts past the limit; rebuild when due
        counts[k, s] += INCREMENT
        totals[k] += INCREMENT
        if totals[k] > COUNT_LIMIT:
            _halve(counts, totals, k)
        n = seen[k] + 1
        seen[k] = n
        if (n & (n - 1)) == 0 if n <= _REBUILD_EVERY else n % _REBUILD_EVERY == 0:
            _rebuild(counts, totals, k, freq, cum)
    if decode and pos > size:
        return -1
    if decode and (pos != size or x != _LOW):
        return -2
    return 0


def _compiled():
    """The kernel, compiled by numba where it is installed (cached on disk), else as Python.
    Under a lock: decoding threads may ask at once."""
    global _KERNEL, _rebuild, _halve, _new_model
    with _COMPILING:
        if _KERNEL is None:
            try:
                import numba
            except ImportError:
                _KERNEL = _kernel
            else:
                def jit(f):
                    return numba.njit(cache=True, nogil=True)(f)

                # the kernel calls these: compiled first, so that it finds the compiled ones
                _rebuild, _halve, _new_model = jit(_rebuild), jit(_halve), jit(_new_model)
                _KERNEL = jit(_kernel)
        return _KERNEL


_KERNEL = None
_COMPILING = threading.Lock()


def contexts_of(symbols: np.ndarray, base: np.ndarray, first: np.ndarray, second: np.ndarray,
                klass: np.ndarray) -> np.ndarray:
    """Each symbol's context (what the decoder computes as it goes): ``base[i] + CLASSES *
    c(first[i]) + c(second[i])``, where ``c(j)`` is 0 for ``j = -1`` (no neighbour), else the
    class ``klass[s]`` (1 to CLASSES - 1) of the symbol ``s`` at ``j`` (an earlier one)."""
    symbols = np.asarray(symbols, dtype=np.int64)

    def c(refs: np.ndarray) -> np.ndarray:
        return np.where(refs >= 0, klass[symbols[np.maximum(refs, 0)]], 0)

    return base + CLASSES * c(first) + c(second)


def _check(num_contexts: int, nsym: int, error: type[ValueError] = ValueError) -> None:
    """The alphabet and model bounds: ``ValueError`` for a writer's arguments, ``AnsError``
    (``error``) for a stream a file describes."""
    if not 1 <= nsym <= MAX_SYMBOLS:
        raise error(f"an adaptive stream codes 1 to {MAX_SYMBOLS} symbols, got {nsym}")
    if not 1 <= num_contexts or num_contexts * nsym > MAX_MODEL:
        raise error(f"an adaptive stream's contexts times its alphabet is at most "
                    f"{MAX_MODEL}, got {num_contexts} x {nsym}")


def adaptive_encode(symbols: np.ndarray, nsym: int, base: np.ndarray | None = None,
                    first: np.ndarray | None = None, second: np.ndarray | None = None,
                    klass: np.ndarray | None = None, num_contexts: int = 1) -> bytes:
    """``symbols`` (each in ``range(nsym)``) as an adaptive stream; empty for no symbols.
    The context of symbol i is given by ``base``, its neighbours ``first`` and ``second``
    (indices of earlier symbols, -1 for none) and the alphabet's ``klass``
    (``contexts_of``); without them every symbol is coded in one context."""
    symbols = np.ascontiguousarray(symbols, dtype=np.int64)
    if symbols.size == 0:
        return b""
    _check(num_contexts, nsym)
    if symbols.min() < 0 or symbols.max() >= nsym:
        raise ValueError(f"every symbol must be in range({nsym})")
    base, first, second, klass = _defaults(symbols.size, nsym, base, first, second, klass)
    contexts = contexts_of(symbols, base, first, second, klass)
    if contexts.min() < 0 or contexts.max() >= num_contexts:
        raise ValueError(f"every context must be in range({num_contexts})")
    freq = np.empty(symbols.size, dtype=np.int64)
    cum = np.empty(symbols.size, dtype=np.int64)
    _compiled()(symbols, base, first, second, klass, num_contexts, np.zeros(0, np.uint16),
                freq, cum)
    return encode_frequencies(freq, cum, PRECISION, interleave=1)


def adaptive_decode(data: bytes, count: int, nsym: int, base: np.ndarray | None = None,
                    first: np.ndarray | None = None, second: np.ndarray | None = None,
                    klass: np.ndarray | None = None, num_contexts: int = 1) -> np.ndarray:
    """``count`` symbols (int32) of an ``adaptive_encode`` stream made with the same contexts;
    ``AnsError`` when the stream does not decode to exactly its end, ``ValueError`` for
    contexts that could reach outside ``range(num_contexts)``."""
    if count == 0:
        if data:
            raise AnsError(f"{len(data)} bytes for no symbols")
        return np.zeros(0, dtype=np.int32)
    _check(num_contexts, nsym, AnsError)
    if len(data) % 2 or len(data) < 4:
        raise AnsError(f"an adaptive stream is whole 16-bit words, at least two, got "
                       f"{len(data)} bytes")
    base, first, second, klass = _defaults(count, nsym, base, first, second, klass)
    if base.min() < 0 or base.max() + (CLASSES + 1) * klass.max() >= num_contexts:
        raise ValueError(f"contexts outside range({num_contexts})")
    words = np.frombuffer(data, dtype="<u2")
    if (int(words[0]) << 16 | int(words[1])) < _LOW:
        raise AnsError("not an adaptive stream: its state is below 2 ** 16")
    out = np.empty(count, dtype=np.int32)
    unused = np.zeros(0, dtype=np.int64)
    status = _compiled()(out, base, first, second, klass, num_contexts, words, unused, unused)
    if status == -1:
        raise AnsError(f"the stream ends before its {count} symbols (damaged, or a wrong "
                       "count)")
    if status == -2:
        raise AnsError(f"the stream holds more than {count} symbols, or other ones (damaged, "
                       "or a wrong count)")
    return out


def _defaults(count: int, nsym: int, base, first, second, klass):
    """The context arrays as the kernel takes them (none: one context), checked: neighbours
    must come before their symbol (the decoder reads them before it), classes in range."""
    base = (np.zeros(count, dtype=np.int64) if base is None
            else np.ascontiguousarray(base, dtype=np.int64))
    none = np.full(count, -1, dtype=np.int64)
    first = none if first is None else np.ascontiguousarray(first, dtype=np.int64)
    second = none if second is None else np.ascontiguousarray(second, dtype=np.int64)
    klass = (np.zeros(nsym, dtype=np.int64) if klass is None
             else np.ascontiguousarray(klass, dtype=np.int64))
    if (base.shape != (count,) or first.shape != (count,) or second.shape != (count,)
            or klass.shape != (nsym,)):
        raise ValueError(f"base, first and second need one entry a symbol ({count}), klass "
                         f"one a symbol of the alphabet ({nsym})")
    order = np.arange(count)
    if ((first >= order) | (first < -1) | (second >= order) | (second < -1)).any():
        raise ValueError("a neighbour must be an earlier symbol (or -1 for none)")
    if klass.min() < 0 or klass.max() >= CLASSES:
        raise ValueError(f"classes must be in range({CLASSES})")
    return base, first, second, klass


__all__ = ["CLASSES", "COUNT_LIMIT", "INCREMENT", "MAX_MODEL", "MAX_SYMBOLS", "PRECISION",
           "adaptive_decode", "adaptive_encode", "contexts_of"]
