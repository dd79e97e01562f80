"""A weight-shared layer's two rANS streams (format version 6 and later) decoded in one
compiled call: the gap stream into gaps and the kept weights' positions, then the index stream
(its filter groups first, where the layer codes its indices in contexts, and each filter's
indices straight into place) into cluster indices.

The same work, with the same kernels (``rans``'s decoders, ``sparse_index.positions_kernel``),
as ``RansReader`` and ``sparse_index.decode_positions`` called step by step, but
without the Python between the steps: about twenty numpy calls and two reader objects a layer,
which were ~40% of decoding a squeezenet1_0-sized file on one core (12.7-13.3 against 6.8-10.5
ms in a prototype) and, holding Python's lock, kept the decoding threads from overlapping.
``decode_layer`` only says whether the streams decoded exactly (every symbol, every gap in
range, each stream ending where it should, the counts right); the caller decodes a layer that
did not again step by step, which names what is wrong, so the errors stay those of one
implementation. Without numba there is no fast path (``decode_layer`` returns None).
"""
from __future__ import annotations

import threading

import numpy as np

from squeezelab.compress.coding import jit, rans, sparse_index
from squeezelab.compress.coding.rans import FOUR_STATES_FROM, STATE_LOW


def _read(words, pos, states, counts, runs, starts, lengths, freq, cum, bits, lut,
          out):  # pragma: no cover - numba compiles it
    """The next segments of a stream into ``out`` (``rans``'s kernels, for one or four
    states, kept in ``states``); returns the next word's position, -1 past the end."""
    if states.size == 4:
        pos, states[0], states[1], states[2], states[3] = _decode4(
            words, pos, states[0], states[1], states[2], states[3], counts, runs, starts,
            lengths, freq, cum, bits, lut, out)
    else:
        pos, states[0] = _decode1(words, pos, states[0], counts, runs, starts, lengths, freq,
                                  cum, bits, lut, out)
    return pos


def _open(words, total):  # pragma: no cover - numba compiles it
    """The states a stream of ``total`` symbols opens with (``rans.num_states``), or an empty
    array where it is too short or a state is below 2 ** 16."""
    n = 4 if total >= FOUR_STATES_FROM else 1
    states = np.empty(n, dtype=np.int64)
    if words.size < 2 * n:
        return states[:0]
    for j in range(n):
        states[j] = (np.int64(words[2 * j]) << 16) | np.int64(words[2 * j + 1])
        if states[j] < STATE_LOW:
            return states[:0]
    return states


def _ended(words, pos, states):  # pragma: no cover - numba compiles it
    if pos != words.size:
        return False
    for j in range(states.size):
        if states[j] != STATE_LOW:
            return False
    return True


def _decode_layer_kernel(gap_words, gap_freq, gap_cum, gap_bits, max_gap, total,
                         index_words, group_freq, group_cum, group_bits, row_size,
                         index_freq, index_cum, index_bits, lut, gaps, positions, groups,
                         symbols):  # pragma: no cover - numba compiles it
    """Fill ``gaps``, ``positions`` (its first ``symbols.size``; it is as long as ``gaps``),
    ``groups`` (one per filter, for more than one context) and ``symbols``; True where
    everything decoded exactly."""
    one = np.ones(1, dtype=np.int64)
    zero = np.zeros(1, dtype=np.int64)
    # the gap stream, then the positions it gives (as sparse_index.decode_positions)
    count = np.full(1, gaps.size, dtype=np.int64)
    if gaps.size:
        states = _open(gap_words, gaps.size)
        if states.size == 0:
            return False
        pos = _read(gap_words, 2 * states.size, states, count, one, zero, count, gap_freq,
                    gap_cum, gap_bits, lut, gaps)
        if not _ended(gap_words, pos, states):
            return False
    elif gap_words.size:
        return False
    # ``positions`` has room for every gap: the kernel writes a filler's too
    nnz = symbols.size
    kept, at = _positions(gaps, max_gap, positions)
    if kept != nnz or at >= total or total - at - 1 >= max_gap:  # kept -1: a gap out of range
        return False
    positions = positions[:nnz]
    # the index stream: each filter's group first where there are several
    rows = groups.size
    if nnz + rows == 0:
        return index_words.size == 0
    states = _open(index_words, nnz + rows)
    if states.size == 0:
        return False
    pos = 2 * states.size
    contexts = index_freq.shape[0]
    if rows == 0:
        count[0] = nnz
        pos = _read(index_words, pos, states, count, one, zero, count, index_freq, index_cum,
                    index_bits, lut, symbols)
        return pos >= 0 and _ended(index_words, pos, states)
    count[0] = rows
    pos = _read(index_words, pos, states, count, one, zero, count, group_freq, group_cum,
                group_bits, lut, groups)
    if pos < 0:
        return False
    # each filter's kept indices: where its row starts among the (increasing) positions
    first = np.searchsorted(positions, np.arange(rows + 1) * row_size)
    first[rows] = nnz
    runs = np.zeros(contexts, dtype=np.int64)
    counts = np.zeros(contexts, dtype=np.int64)
    for r in range(rows):
        runs[groups[r]] += 1
        counts[groups[r]] += first[r + 1] - first[r]
    slot = np.cumsum(runs) - runs  # where each group's runs begin, filters in order
    starts = np.empty(rows, dtype=np.int64)
    lengths = np.empty(rows, dtype=np.int64)
    for r in range(rows):
        k = slot[groups[r]]
        slot[groups[r]] += 1
        starts[k] = first[r]
        lengths[k] = first[r + 1] - first[r]
    pos = _read(index_words, pos, states, counts, runs, starts, lengths, index_freq, index_cum,
                index_bits, lut, symbols)
    return pos >= 0 and _ended(index_words, pos, states)


def _kernel():
    """The compiled kernel (cached on disk), or None without numba. Compiled once, under a
    lock: decoding threads may ask at once."""
    global _KERNEL, _decode1, _decode4, _positions, _read, _open, _ended
    with _LOCK:
        if _KERNEL is None:
            _, decode1, decode4, _, compiled = rans._compiled()
            if not compiled:
                _KERNEL = False
            else:
                import numba

                def njit(f):
                    return numba.njit(cache=True, nogil=True)(f)

                # what the kernel calls, compiled first, so that it finds the compiled ones
                _decode1, _decode4 = decode1, decode4
                _positions = jit.compiled(sparse_index.positions_kernel)
                _read, _open, _ended = njit(_read), njit(_open), njit(_ended)
                _KERNEL = njit(_decode_layer_kernel)
        return _KERNEL or None


_KERNEL = None
_LOCK = threading.Lock()
# rans's kernels and sparse_index's, set by _kernel()
_decode1 = _decode4 = _positions = None


def decode_layer(gap_data, gap_table: np.ndarray, num_entries: int, max_gap: int, total: int,
                 index_data, index_tables: np.ndarray, nnz: int, num_rows: int,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(gaps, positions, cluster indices) of a shared layer of ``total`` weights in
    ``num_rows`` filters, ``nnz`` of them kept: its gap stream (``gap_data``, ``num_entries``
    symbols under the length table ``gap_table``; ``max_gap``: ``sparse_index.max_gap`` of its
    gap bits) and its index stream (``index_data`` under ``index_tables``, a row per context;
    with more than one, the filters' groups come first, uniform over the contexts). None where
    they did not decode exactly, or without numba: decode the layer step by step then."""
    kernel = _kernel()
    if kernel is None or len(gap_data) % 2 or len(index_data) % 2:
        return None
    contexts = index_tables.shape[0]
    gap, index = rans.Models(np.asarray(gap_table)[None]), rans.Models(index_tables)
    group = rans.Models(np.ones((1, contexts), dtype=np.uint8))
    lut = np.empty(1 << int(max(gap.bits.max(), index.bits.max(), group.bits.max())),
                   dtype=np.int64)
    gaps = np.empty(num_entries, dtype=np.int32)
    positions = np.empty(num_entries, dtype=np.int64)
    groups = np.empty(num_rows if contexts > 1 else 0, dtype=np.int32)
    symbols = np.empty(nnz, dtype=np.int32)
    ok = kernel(np.frombuffer(gap_data, dtype="<u2"), gap.freq, gap.cum, gap.bits, max_gap,
                total, np.frombuffer(index_data, dtype="<u2"), group.freq, group.cum,
                group.bits, total // max(num_rows, 1), index.freq, index.cum, index.bits, lut,
                gaps, positions, groups, symbols)
    return (gaps, positions[:nnz], symbols) if ok else None


__all__ = ["decode_layer"]
