"""Canonical Huffman coding of integer symbols (Deep Compression, Han et al., arXiv 1510.00149,
section 4), with a length limit and a fast table-driven decoder.

A code is described by its code lengths per symbol alone (canonical Huffman: codes are assigned
in order of (length, symbol)), so that is all a file needs to store.

Bit streams are MSB-first. To decode quickly without a Python loop per symbol, an encoded stream
is split into *lanes* of ``lane_symbols`` consecutive symbols (the idea of zstd's four-stream
Huffman literals, taken further): the bits are the plain concatenation of all codes, preceded by
a directory of the bit length of every lane but the last (u16 little-endian each). The decoder
then advances every lane by one symbol per numpy step, so a stream of ``n`` symbols costs
``lane_symbols`` vectorised steps whatever ``n`` is, and several streams (all layers of a file)
decode together in the same steps (``huffman_decode_many``). The directory costs 16 bits per
``lane_symbols`` symbols (0.03 bit per symbol at the default 512).
"""
from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from squeezelab.compress.coding.sparse_index import pack_bits, unpack_bits

# Longest code allowed: a code plus its bit offset inside a byte (<= 7) must fit the 32-bit
# windows the decoder reads, and lane_symbols * 24 must fit the u16 lane directory.
MAX_CODE_LENGTH = 24
DEFAULT_LANE_SYMBOLS = 512
# Bits of the decoder's first-level lookup table (2**LUT_BITS entries per code table).
LUT_BITS = 11
# Code lengths are stored at 5 bits per symbol (0..24 fits in 5 bits).
LENGTH_BITS = 5


class HuffmanError(ValueError):
    """A Huffman table or stream that is not valid (not a prefix code, truncated, bad code).

    ``stream`` is the position of the bad stream in a ``huffman_decode_many`` call (or None) and
    ``detail`` the message without the stream prefix, so callers can name their own stream.
    """

    def __init__(self, detail: str, stream: int | None = None):
        super().__init__(detail if stream is None else f"stream {stream}: {detail}")
        self.stream = stream
        self.detail = detail


@dataclass(frozen=True)
class HuffmanTable:
    """A canonical Huffman code: ``lengths[s]`` is the code length of symbol ``s`` in bits
    (0 = symbol unused). ``to_bytes``/``from_bytes`` serialise it as 5-bit lengths."""

    lengths: np.ndarray  # uint8 [num_symbols]

    @property
    def num_symbols(self) -> int:
        return int(self.lengths.shape[0])

    def average_length(self, counts: np.ndarray) -> float:
        """Mean code length in bits over symbols occurring ``counts`` times."""
        total = int(np.sum(counts))
        if total == 0:
            return 0.0
        return float(np.dot(self.lengths.astype(np.float64), counts) / total)

    def to_bytes(self) -> bytes:
        return pack_bits(self.lengths, LENGTH_BITS)

    @classmethod
    def from_bytes(cls, data: bytes, num_symbols: int) -> HuffmanTable:
        """Parse 5-bit code lengths; raises HuffmanError if they are not a valid prefix code."""
        need = (num_symbols * LENGTH_BITS + 7) // 8
        if len(data) != need:
            raise HuffmanError(
                f"code-length table of {num_symbols} symbols needs {need} bytes, got {len(data)}"
            )
        lengths = unpack_bits(data, LENGTH_BITS, num_symbols).astype(np.uint8)
        check_lengths(lengths)
        return cls(lengths)


def check_lengths(lengths: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> None:
    """Raise HuffmanError unless ``lengths`` describe a prefix code (Kraft sum <= 1)."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise HuffmanError(f"code lengths must be 1-D, got shape {lengths.shape}")
    if lengths.size and (int(lengths.max()) > max_length or int(lengths.min()) < 0):
        raise HuffmanError(
            f"code lengths must be in [0, {max_length}], got max {int(lengths.max())}"
        )
    used = lengths[lengths > 0].astype(np.int64)
    # Kraft sum scaled by 2^max_length: exact integer arithmetic.
    kraft = int(np.sum(np.left_shift(1, max_length - used))) if used.size else 0
    if kraft > (1 << max_length):
        raise HuffmanError(
            f"code lengths are not a prefix code: Kraft sum {kraft / (1 << max_length):.4f} > 1"
        )


def huffman_code_lengths(counts: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Optimal code lengths (uint8 per symbol, 0 for unused symbols) for symbol ``counts``.

    Plain Huffman tree lengths; if the longest exceeds ``max_length``, the length histogram is
    rebalanced as in JPEG (ITU T.81, annex K.3, Adjust_BITS) and lengths are handed back to the
    symbols in order of decreasing count. A single used symbol gets a 1-bit code.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1:
        raise ValueError(f"counts must be 1-D, got shape {counts.shape}")
    if counts.size and int(counts.min()) < 0:
        raise ValueError(f"counts must be non-negative, got min {int(counts.min())}")
    if not 1 <= max_length <= MAX_CODE_LENGTH:
        raise ValueError(f"max_length must be in [1, {MAX_CODE_LENGTH}], got {max_length}")
    lengths = np.zeros(counts.shape[0], dtype=np.uint8)
    used = np.flatnonzero(counts)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used[0]] = 1
        return lengths
    if used.size > (1 << max_length):
        raise ValueError(f"{used.size} symbols cannot have codes of at most {max_length} bits")
    n = used.size
    # Huffman tree by a heap of (count, node id); parents get ids n, n+1, ... so a parent's id
    # is always larger than its children's, and depths follow in one backward pass.
    heap = [(int(c), i) for i, c in enumerate(counts[used])]
    heapq.heapify(heap)
    parent = np.zeros(2 * n - 1, dtype=np.int64)
    next_id = n
    while len(heap) > 1:
        c1, a = heapq.heappop(heap)
        c2, b = heapq.heappop(heap)
        parent[a] = parent[b] = next_id
        heapq.heappush(heap, (c1 + c2, next_id))
        next_id += 1
    depth = np.zeros(2 * n - 1, dtype=np.int64)
    for node in range(2 * n - 3, -1, -1):  # root is 2n-2 with depth 0
        depth[node] = depth[parent[node]] + 1
    leaf_depth = depth[:n]
    if leaf_depth.max() > max_length:
        leaf_depth = _limit_lengths(counts[used], leaf_depth, max_length)
    lengths[used] = leaf_depth
    return lengths


def _limit_lengths(counts: np.ndarray, depth: np.ndarray, max_length: int) -> np.ndarray:
    """JPEG annex K.3 Adjust_BITS on the length histogram, then reassign by frequency."""
    max_depth = int(depth.max())
    bits = np.bincount(depth, minlength=max_depth + 1).astype(np.int64)
    i = max_depth
    while i > max_length:
        while bits[i] > 0:
            # Move a pair of codes of length i up: one becomes a sibling at length j+1 of a
            # code of length j that is lengthened by one; Kraft sum stays exactly 1.
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
        i -= 1
    new_lengths = np.repeat(np.arange(bits.shape[0]), bits)  # ascending lengths
    # Most frequent symbol gets the shortest code; stable so ties keep symbol order.
    order = np.argsort(-counts.astype(np.int64), kind="stable")
    out = np.empty_like(depth)
    out[order] = new_lengths
    return out


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values (uint32, right-aligned in ``lengths[s]`` bits) for each symbol.

    Symbols sorted by (length, symbol) get consecutive codes; moving to a longer length shifts
    the next code left. Unused symbols (length 0) get code 0.
    """
    lengths = np.asarray(lengths).astype(np.int64)
    check_lengths(lengths)
    codes = np.zeros(lengths.shape[0], dtype=np.uint32)
    used = np.flatnonzero(lengths)
    if used.size == 0:
        return codes
    order = used[np.lexsort((used, lengths[used]))]
    sorted_len = lengths[order]
    # code_i = (code_{i-1} + 1) << (len_i - len_{i-1}); in closed form with a common scale of
    # 2^MAX: code_i * 2^(MAX-len_i) = sum_{k<i} 2^(MAX-len_k)  (the Kraft prefix sum).
    weights = np.left_shift(np.int64(1), MAX_CODE_LENGTH - sorted_len)
    prefix = np.concatenate(([0], np.cumsum(weights)[:-1]))
    codes[order] = (prefix >> (MAX_CODE_LENGTH - sorted_len)).astype(np.uint32)
    return codes


def _pack_varlen(values: np.ndarray, widths: np.ndarray) -> bytes:
    """Concatenate ``values[i]`` written in ``widths[i]`` bits (<= 25) MSB-first, zero-padded."""
    widths = widths.astype(np.int64)
    if values.size == 0:
        return b""
    ends = np.cumsum(widths)
    starts = ends - widths
    nbytes = int((ends[-1] + 7) // 8)
    byte0 = starts >> 3
    # Place each code left-aligned in a 32-bit word starting at its first byte; codes never
    # share a bit, so summing byte contributions equals OR-ing them.
    shift = 32 - widths - (starts & 7)
    word = values.astype(np.int64) << shift
    acc = np.zeros(nbytes + 4, dtype=np.int64)
    for k in range(4):
        part = (word >> (24 - 8 * k)) & 0xFF
        acc += np.bincount(byte0 + k, weights=part, minlength=nbytes + 4).astype(np.int64)
    return acc[:nbytes].astype(np.uint8).tobytes()


def huffman_encode(
    symbols: np.ndarray,
    num_symbols: int,
    *,
    max_length: int = MAX_CODE_LENGTH,
    lane_symbols: int = DEFAULT_LANE_SYMBOLS,
    table: HuffmanTable | None = None,
) -> tuple[bytes, HuffmanTable]:
    """Huffman-code integer ``symbols`` in ``[0, num_symbols)``.

    Returns ``(data, table)``: ``data`` is the lane directory followed by the bit stream (see the
    module docstring), ``table`` the canonical code (built from the symbol counts unless given).
    """
    symbols = np.asarray(symbols).reshape(-1)
    if symbols.size and not np.issubdtype(symbols.dtype, np.integer):
        raise ValueError(f"symbols must be integers, got dtype {symbols.dtype}")
    symbols = symbols.astype(np.int64)
    if symbols.size and (symbols.min() < 0 or symbols.max() >= num_symbols):
        raise ValueError(
            f"symbols must be in [0, {num_symbols}), got range [{symbols.min()}, {symbols.max()}]"
        )
    _check_lane_symbols(lane_symbols)
    counts = np.bincount(symbols, minlength=num_symbols)
    if table is None:
        table = HuffmanTable(huffman_code_lengths(counts, max_length))
    elif table.num_symbols != num_symbols:
        raise ValueError(f"table has {table.num_symbols} symbols, expected {num_symbols}")
    lengths = table.lengths.astype(np.int64)
    if symbols.size and np.any(lengths[symbols] == 0):
        raise ValueError("table has no code for some symbol in the stream")
    codes = canonical_codes(lengths)
    widths = lengths[symbols]
    lane_bits = np.add.reduceat(widths, np.arange(0, symbols.size, lane_symbols)) if (
        symbols.size) else np.zeros(0, dtype=np.int64)
    directory = lane_bits[:-1].astype("<u2").tobytes()
    return directory + _pack_varlen(codes[symbols], widths), table


def _check_lane_symbols(lane_symbols: int) -> None:
    if not isinstance(lane_symbols, (int, np.integer)) or not (
        1 <= lane_symbols <= 65535 // MAX_CODE_LENGTH
    ):
        raise ValueError(
            f"lane_symbols must be an int in [1, {65535 // MAX_CODE_LENGTH}], got {lane_symbols!r}"
        )


@dataclass
class _Decoder:
    """Range tables of one or more canonical codes, concatenated for one searchsorted."""

    starts: np.ndarray  # int64, key = table_id << 33 | left-aligned 32-bit first code
    range_len: np.ndarray  # int64 code length of the range (0 = invalid region)
    range_base: np.ndarray  # int64 index into sorted_syms minus the range's first code
    sorted_syms: np.ndarray  # int64 symbols of all tables in canonical order


def _build_decoder(tables: Sequence[HuffmanTable]) -> _Decoder:
    starts, rlen, rbase, syms = [], [], [], []
    sym_offset = 0
    for t, table in enumerate(tables):
        lengths = table.lengths.astype(np.int64)
        check_lengths(lengths)
        used = np.flatnonzero(lengths)
        key0 = t << 33
        order = used[np.lexsort((used, lengths[used]))]
        sorted_len = lengths[order]
        codes = canonical_codes(lengths)[order].astype(np.int64)
        # One range per distinct length: [first << (32-length), (first+count) << (32-length)).
        distinct, first_idx, num = np.unique(sorted_len, return_index=True, return_counts=True)
        end = 0
        for length, i0, c in zip(distinct.tolist(), first_idx.tolist(), num.tolist()):
            first = int(codes[i0])
            starts.append(key0 + (first << (32 - length)))
            rlen.append(length)
            rbase.append(sym_offset + i0 - first)
            end = (first + c) << (32 - length)
        # Everything after the last code (an incomplete code) is an invalid region.
        starts.append(key0 + end)
        rlen.append(0)
        rbase.append(0)
        syms.append(order)
        sym_offset += order.size
    return _Decoder(
        starts=np.asarray(starts, dtype=np.int64),
        range_len=np.asarray(rlen, dtype=np.int64),
        range_base=np.asarray(rbase, dtype=np.int64),
        sorted_syms=np.concatenate(syms) if syms else np.zeros(0, np.int64),
    )


def _lookup(dec: _Decoder, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(length, symbol) of the code at the start of each left-aligned 32-bit window
    ``keys = table_id << 33 | window``; length 0 where the bits are not a code."""
    r = np.searchsorted(dec.starts, keys, side="right") - 1
    length = dec.range_len[r]
    idx = dec.range_base[r] + ((keys & 0xFFFFFFFF) >> (32 - np.maximum(length, 1)))
    sym = np.take(dec.sorted_syms, idx, mode="clip") if dec.sorted_syms.size else np.zeros_like(idx)
    return length.copy(), sym


def huffman_decode(
    data: bytes, table: HuffmanTable, count: int, *, lane_symbols: int = DEFAULT_LANE_SYMBOLS
) -> np.ndarray:
    """Decode ``count`` symbols (int64 array) from ``data`` made by ``huffman_encode``.

    Raises HuffmanError if the stream is too short, too long, holds a bit pattern that is not
    a code, or its lane directory disagrees with the codes.
    """
    return huffman_decode_many([(data, table, count)], lane_symbols=lane_symbols)[0]


def huffman_decode_many(
    streams: Sequence[tuple[bytes, HuffmanTable, int]],
    *,
    lane_symbols: int = DEFAULT_LANE_SYMBOLS,
) -> list[np.ndarray]:
    """Decode several ``(data, table, count)`` streams together, in ``lane_symbols`` steps."""
    _check_lane_symbols(lane_symbols)
    results: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in streams]
    lane_start, lane_end, lane_count, lane_table, lane_stream = [], [], [], [], []
    bufs = []
    buf_offset = 0  # bit offset of each stream's bit area in the concatenated buffer
    live_tables = []
    for s, (data, table, count) in enumerate(streams):
        if not isinstance(count, (int, np.integer)) or count < 0:
            raise HuffmanError(f"symbol count must be a non-negative int, got {count}", s)
        count = int(count)
        if count == 0:
            if len(data):
                raise HuffmanError(f"0 symbols but {len(data)} bytes", s)
            continue
        num_lanes = -(-count // lane_symbols)
        dir_bytes = 2 * (num_lanes - 1)
        if len(data) < dir_bytes:
            raise HuffmanError(
                f"lane directory needs {dir_bytes} bytes, stream has {len(data)}", s
            )
        bits = np.frombuffer(data, dtype="<u2", count=num_lanes - 1).astype(np.int64)
        body = data[dir_bytes:]
        body_bits = 8 * len(body)
        counts = np.full(num_lanes, lane_symbols, dtype=np.int64)
        counts[-1] = count - lane_symbols * (num_lanes - 1)
        # Every code is 1..24 bits, so a lane of c symbols has between c and 24c bits.
        known = counts[:-1]
        if np.any(bits < known) or np.any(bits > MAX_CODE_LENGTH * known):
            raise HuffmanError("lane directory lists impossible lane lengths", s)
        used_bits = int(bits.sum())
        last_min = int(counts[-1])
        if used_bits + last_min > body_bits:
            raise HuffmanError(
                f"stream ends early ({body_bits} bits for at least "
                f"{used_bits + last_min} bits of codes)",
                s,
            )
        if body_bits - used_bits - 7 > MAX_CODE_LENGTH * last_min:
            raise HuffmanError(f"{body_bits} bits is more than {count} codes can use", s)
        t = len(live_tables)
        live_tables.append(table)
        starts = np.concatenate(([0], np.cumsum(bits))) + buf_offset
        ends = np.concatenate((starts[1:], [-1]))  # last lane's end is checked separately
        lane_start.append(starts)
        lane_end.append(ends)
        lane_count.append(counts)
        lane_table.append(np.full(num_lanes, t, dtype=np.int64))
        lane_stream.append(np.full(num_lanes, s, dtype=np.int64))
        bufs.append((s, body, buf_offset, body_bits))
        buf_offset += body_bits
    if not live_tables:
        return results
    dec = _build_decoder(live_tables)
    pos = np.concatenate(lane_start)
    end = np.concatenate(lane_end)
    counts = np.concatenate(lane_count)
    lane_tab = np.concatenate(lane_table)
    num_lanes = pos.size
    steps = int(counts.max())
    # A lying stream can move a lane at most MAX_CODE_LENGTH bits a step past the data: pad
    # with zero bytes for that instead of clamping positions in every step.
    pad = (steps * MAX_CODE_LENGTH) // 8 + 8
    buf = np.frombuffer(b"".join(b[1] for b in bufs) + b"\0" * pad, dtype=np.uint8)
    # Big-endian 32-bit window starting at every byte: win[i] = buf[i..i+3]. The loop works in
    # uint32 (shifts wrap modulo 2**32, which drops the bits left of the window for free).
    b = buf.astype(np.uint32)
    win = (b[:-3] << 24) | (b[1:-2] << 16) | (b[2:-1] << 8) | b[3:]
    if win.size >= 1 << 28:
        raise HuffmanError(f"{win.size} bytes of streams is more than one call decodes (2**28)")
    # First level: a table indexed by the next LUT_BITS bits of a lane (per code table) gives
    # symbol << 5 | length of every code of at most LUT_BITS bits; length 0 = a longer code or
    # not a code, resolved by _lookup on the few lanes concerned.
    lut_keys = (np.arange(len(live_tables), dtype=np.int64)[:, None] << 33) | (
        np.arange(1 << LUT_BITS, dtype=np.int64)[None, :] << (32 - LUT_BITS))
    lut_len, lut_sym = _lookup(dec, lut_keys.reshape(-1))
    lut_len[lut_len > LUT_BITS] = 0
    lut = ((lut_sym << 5) | lut_len).astype(np.uint32)
    lut_base = (lane_tab << LUT_BITS).astype(np.uint32)
    table_key = lane_tab << 33
    pos = pos.astype(np.uint32)
    out = np.empty((steps, num_lanes), dtype=np.uint32)  # row i: symbol i << 5 | length
    bad = np.zeros(num_lanes, dtype=bool)
    final_pos = pos.copy()
    finish_at: dict[int, np.ndarray] = {}
    short = np.flatnonzero(counts < steps)  # only the last lane of a stream can be short
    for c in np.unique(counts[short]).tolist():
        finish_at[c] = short[counts[short] == c]
    shift_lut = np.uint32(32 - LUT_BITS)
    three, seven, low5 = np.uint32(3), np.uint32(7), np.uint32(31)
    for i in range(steps):
        w = win[pos >> three] << (pos & seven)
        entry = lut[lut_base | (w >> shift_lut)]
        length = entry & low5
        if not length.all():
            slow = np.flatnonzero(length == 0)
            slow_len, slow_sym = _lookup(dec, table_key[slow] | w[slow].astype(np.int64))
            length[slow] = slow_len
            entry[slow] = (slow_sym << 5) | slow_len
            bad[slow[(slow_len == 0) & (counts[slow] > i)]] = True
        out[i] = entry
        pos += length
        done = finish_at.get(i + 1)
        if done is not None:
            final_pos[done] = pos[done]
    out >>= np.uint32(5)
    pos = pos.astype(np.int64)
    final_pos = final_pos.astype(np.int64)
    full = counts == steps
    final_pos[full] = pos[full]
    lane_of = np.concatenate(lane_stream)
    if bad.any():
        s = int(lane_of[np.flatnonzero(bad)[0]])
        raise HuffmanError("holds a bit pattern that is not a code of its table", s)
    ok_end = (end < 0) | (final_pos == end)
    if not ok_end.all():
        s = int(lane_of[np.flatnonzero(~ok_end)[0]])
        raise HuffmanError("a lane's codes disagree with the lane directory", s)
    out = out.T  # (lanes, steps)
    keep = np.arange(steps)[None, :] < counts[:, None]
    # Last lane of each stream: its codes must end in the stream's final byte, padding zero.
    for s, body, off, body_bits in bufs:
        lanes = np.flatnonzero(lane_of == s)
        stop = int(final_pos[lanes[-1]]) - off
        if stop > body_bits:
            raise HuffmanError(
                f"stream ends early (codes need {stop} bits, stream has {body_bits})", s
            )
        if body_bits - stop >= 8:
            raise HuffmanError(f"{body_bits - stop} unused bits after the last code", s)
        if stop < body_bits and (body[-1] & ((1 << (body_bits - stop)) - 1)):
            raise HuffmanError("padding bits after the last code are not zero", s)
        results[s] = out[lanes][keep[lanes]].astype(np.int64)
    return results


__all__ = [
    "DEFAULT_LANE_SYMBOLS", "MAX_CODE_LENGTH", "HuffmanError", "HuffmanTable", "canonical_codes",
    "check_lengths", "huffman_code_lengths", "huffman_decode", "huffman_decode_many",
    "huffman_encode",
]
