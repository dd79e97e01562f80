"""The two streams of a weight-shared layer in a .sqz file, cluster indices and position gaps:
coded with Huffman (the paper's) or rANS, whichever a writer asks for or, per layer, whichever is
smaller; decoded back to symbols, Huffman streams all together in lanes, ANS streams one by one
and checked against their CRC. ``sqz.py`` holds the container around them.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from squeezelab.compress.coding.ans import (
    AnsError,
    ans_decode,
    ans_encode,
    length_table,
    pack_table,
    unpack_table,
)
from squeezelab.compress.coding.huffman import (
    HuffmanError,
    HuffmanTable,
    huffman_decode_many,
    huffman_encode,
)
from squeezelab.compress.format.layout import SqzFormatError

Streams = tuple[bytes, bytes, bytes, bytes]  # index table, index stream, gap table, gap stream


def encode_streams(kept: np.ndarray, index_symbols: int, gaps: np.ndarray, gap_symbols: int,
                   coder: str, lane_symbols: int) -> tuple[str, Streams]:
    """(the coder used, its four byte strings) for a layer's kept indices and gaps; ``coder``
    "auto" codes both ways and keeps the fewer bytes."""
    streams: dict[str, Streams] = {}
    if coder in ("auto", "huffman"):
        index_data, index_table = huffman_encode(kept, index_symbols, lane_symbols=lane_symbols)
        gap_data, gap_table = huffman_encode(gaps, gap_symbols, lane_symbols=lane_symbols)
        streams["huffman"] = (index_table.to_bytes(), index_data, gap_table.to_bytes(), gap_data)
    if coder in ("auto", "ans"):
        index_codes, gap_codes = length_table(kept, index_symbols), length_table(gaps, gap_symbols)
        streams["ans"] = (pack_table(index_codes), ans_encode(kept, index_codes),
                          pack_table(gap_codes), ans_encode(gaps, gap_codes))
    chosen = min(streams, key=lambda c: sum(len(b) for b in streams[c]))
    return chosen, streams[chosen]


def symbols_crc32(symbols: np.ndarray, gaps: np.ndarray) -> int:
    """What an ANS entry's ``symbols_crc32`` covers: its index then gap symbols as int32."""
    crc = zlib.crc32(np.ascontiguousarray(symbols, dtype="<i4").tobytes())
    return zlib.crc32(np.ascontiguousarray(gaps, dtype="<i4").tobytes(), crc)


def decode_streams(entries: Sequence[dict[str, Any]], payload: memoryview,
                   lane_symbols: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{layer name: (index symbols, gap symbols)} of the shared ``entries`` (validated by
    ``layout._parse``); ``SqzFormatError`` naming the layer and stream for a bad one."""
    decoded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    huffman_entries, streams = [], []
    for entry in entries:
        if entry.get("coder", "huffman") == "ans":
            decoded[entry["name"]] = _decode_ans_entry(entry, payload)
            continue
        where = f"layer {entry['name']!r}"
        tables = []
        for key, nsym in (("index_table", entry["index_symbols"]),
                          ("gap_table", entry["gap_symbols"])):
            off, length = entry[key]
            try:
                tables.append(HuffmanTable.from_bytes(bytes(payload[off:off + length]), nsym))
            except HuffmanError as e:
                raise SqzFormatError(f"{where}: {key.replace('_', ' ')}: {e}") from None
        (i_off, i_len), (g_off, g_len) = entry["index"], entry["gap"]
        streams.append((bytes(payload[i_off:i_off + i_len]), tables[0], entry["nnz"]))
        streams.append((bytes(payload[g_off:g_off + g_len]), tables[1], entry["num_entries"]))
        huffman_entries.append(entry)
    try:
        symbol_lists = huffman_decode_many(streams, lane_symbols=lane_symbols)
    except HuffmanError as e:
        entry = huffman_entries[e.stream // 2] if e.stream is not None else None
        kind = "index" if e.stream is not None and e.stream % 2 == 0 else "gap"
        what = f"layer {entry['name']!r}: {kind} stream" if entry else "a stream"
        count = entry["nnz"] if kind == "index" else entry["num_entries"]
        raise SqzFormatError(f"{what} of {count} entries: {e.detail}") from None
    for k, entry in enumerate(huffman_entries):
        decoded[entry["name"]] = (symbol_lists[2 * k], symbol_lists[2 * k + 1])
    return decoded


def _decode_ans_entry(entry: dict[str, Any], payload: memoryview) -> tuple[np.ndarray, np.ndarray]:
    """(index symbols, gap symbols) of an ANS-coded shared entry, checked against its CRC."""
    where = f"layer {entry['name']!r}"
    out = []
    for kind, nsym, count in (("index", entry["index_symbols"], entry["nnz"]),
                              ("gap", entry["gap_symbols"], entry["num_entries"])):
        t_off, t_len = entry[f"{kind}_table"]
        s_off, s_len = entry[kind]
        try:
            codes = unpack_table(bytes(payload[t_off:t_off + t_len]), nsym)
            out.append(ans_decode(bytes(payload[s_off:s_off + s_len]), codes, count)
                       if count else np.zeros(0, dtype=np.int32))
        except AnsError as e:
            raise SqzFormatError(f"{where}: {kind} stream of {count} entries: {e}") from None
    if symbols_crc32(*out) != entry["symbols_crc32"]:
        raise SqzFormatError(f"{where}: the decoded symbols do not match their CRC32 (a damaged "
                             "stream, a wrong count, or an ANS coder that models differently)")
    return out[0], out[1]


__all__ = ["decode_streams", "encode_streams", "symbols_crc32"]
