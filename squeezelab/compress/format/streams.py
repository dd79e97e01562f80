"""The two streams of a weight-shared layer in a .sqz file, cluster indices and position gaps:
coded with Huffman (the paper's) or rANS, whichever a writer asks for or, per layer, whichever is
smaller; decoded back to the kept weights' positions and cluster indices, Huffman streams all
together in lanes, ANS streams one layer at a time and checked against their CRC. ``sqz.py``
holds the container around them.

Since version 4 an ANS layer may code its indices in *contexts* (``contexts.py``): its filters
are split into ``index_contexts`` groups, each with its own length table. The index stream then
holds, in decoding order, each filter's group (uniform over the groups) and the indices of each
group in turn (in flattened order within the group); the reader decodes the gap stream first,
since the positions say which filter every index belongs to, and (from version 6) decodes
each filter's indices straight into their place (``RansReader.read_into``).

Since version 5 a pruned tensor that is not shared may be stored *sparse*: its kept values raw,
and their positions as the same gap stream (``encode_gaps``; it has no index stream).

Since version 6 the ANS streams are written by our own rANS (``coding/rans.py``, decoded by
table lookup, several times faster); those of versions 3-5 are read with constriction's
``AnsCoder``, which wrote them. Tables, contexts and the CRC are the same in both.

Since version 7 a layer's streams may be *adaptive* (``coding/adaptive.py``): no tables; the
gaps in one learnt context; the filter groups (as version 4's, when there is more than one) in
the index_table stream, learnt the same way; each index in the context of its filter's group
and of the signs of the codebook values of its kept neighbours (``contexts.neighbours``: left
and above in a kernel, the one before in a 1x1 or fully connected filter; none, below zero,
zero or above). The CRC covers the same symbols.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from squeezelab.compress.coding import adaptive
from squeezelab.compress.coding.ans import (
    AnsError,
    AnsReader,
    length_table,
    pack_table,
    uniform_table,
    unpack_table,
    unpack_tables,
)
from squeezelab.compress.coding.contexts import GROUP_COUNTS, group_rows, neighbours, ungroup
from squeezelab.compress.coding.huffman import (
    HuffmanError,
    HuffmanTable,
    huffman_decode_many,
    huffman_encode,
)
from squeezelab.compress.coding.layer_decode import decode_layer
from squeezelab.compress.coding.rans import RansReader, rans_encode, rans_encode_segments
from squeezelab.compress.coding.sparse_index import decode_positions, max_gap
from squeezelab.compress.format.checksum import crc32
from squeezelab.compress.format.layout import CODERS, VERSION, SqzFormatError

#: Coders whose layers are decoded one at a time and checked against ``symbols_crc32``.
_CHECKED_CODERS = ("ans", "adaptive")
# An adaptive index's context: its filter group times this, plus the classes of its two
# neighbours (adaptive.contexts_of)
_PER_GROUP = adaptive.CLASSES ** 2


def _ans_reader(version: int) -> type[AnsReader] | type[RansReader]:
    """The reader of a version's ANS streams (they share one interface)."""
    return RansReader if version >= 6 else AnsReader


def _ans_decode(data: bytes, codes: np.ndarray, count: int, version: int) -> np.ndarray:
    reader = _ans_reader(version)(data, count)
    symbols = reader.read(codes, count)
    reader.close()
    return symbols


@dataclass
class LayerStreams:
    """What a shared layer's entry stores besides its codebook: the coder, its tables and
    streams (in payload order), and how many index contexts (ANS only; 1 for none)."""

    coder: str
    index_table: bytes
    index: bytes
    gap_table: bytes
    gap: bytes
    index_contexts: int = 1

    @property
    def size(self) -> int:
        return len(self.index_table) + len(self.index) + len(self.gap_table) + len(self.gap)


def _coders(coder: str, *alphabets: int) -> list[str]:
    """The coders ``coder`` asks to try for streams of these alphabet sizes: huffman and ans
    for "auto", all three for "smallest" (adaptive only where its alphabets allow)."""
    fits = all(n <= adaptive.MAX_SYMBOLS for n in alphabets)
    if coder == "auto":
        return ["huffman", "ans"]
    if coder == "smallest":
        return list(CODERS) if fits else ["huffman", "ans"]
    if coder == "adaptive" and not fits:
        raise ValueError(f"the adaptive coder codes alphabets of up to {adaptive.MAX_SYMBOLS} "
                         f"symbols, this layer has {max(alphabets)} (fewer gap bits, or "
                         "another coder)")
    return [coder]


def negative_entries(codebook: bytes, dtype: str) -> np.ndarray:
    """Which entries of a codebook stored as ``codebook`` (raw bytes in ``dtype``: float32,
    float16 or bfloat16) are below zero: what the adaptive index contexts use, computed the
    same way by writer and reader."""
    if dtype == "bfloat16":  # the high half of a float32
        values = (np.frombuffer(codebook, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        values = np.frombuffer(codebook, dtype={"float32": "<f4", "float16": "<f2"}[dtype])
    return values < 0


def _row_counts(kept: np.ndarray, index_symbols: int, rows: np.ndarray,
                num_rows: int) -> np.ndarray:
    """``[filter, symbol]``: how many of each filter's kept indices are each symbol (what
    ``contexts.group_rows`` groups filters by)."""
    counts = np.zeros((num_rows, index_symbols), dtype=np.int64)
    np.add.at(counts, (rows, kept), 1)
    return counts


def _adaptive_index(kept: np.ndarray, index_symbols: int, rows: np.ndarray | None,
                    row_scale: np.ndarray | None, positions: np.ndarray | None,
                    shape: Sequence[int] | None, negative: np.ndarray | None,
                    ) -> tuple[bytes, bytes, int]:
    """(groups stream, index stream, number of groups) of a layer's indices, adaptive."""
    if kept.size == 0:
        return b"", b"", 1
    if (rows is None or row_scale is None or positions is None or shape is None
            or negative is None):
        return b"", adaptive.adaptive_encode(kept, index_symbols), 1
    counts = _row_counts(kept, index_symbols, rows, row_scale.size)
    most = adaptive.MAX_MODEL // (_PER_GROUP * index_symbols)  # the reader's model bound
    num_groups, groups = group_rows(counts, row_scale,
                                    tuple(n for n in GROUP_COUNTS if n <= most))
    contexts = _index_contexts(groups, positions, shape, negative[:index_symbols])
    index = adaptive.adaptive_encode(kept, index_symbols, *contexts,
                                     num_contexts=_PER_GROUP * num_groups)
    table = adaptive.adaptive_encode(groups, num_groups) if num_groups > 1 else b""
    return table, index, num_groups


def _index_contexts(groups: np.ndarray, positions: np.ndarray, shape: Sequence[int],
                    negative: np.ndarray) -> tuple[np.ndarray, ...]:
    """The adaptive coder's (base, first, second, klass) of a layer's kept indices: the group
    of each one's filter, its neighbours (``contexts.neighbours``), and the class of each
    cluster (1: a negative value, 2: not)."""
    rows, first, second = neighbours(positions, shape)
    return (groups[rows] * _PER_GROUP, first, second,
            np.where(negative, 1, 2).astype(np.int64))


def _code(symbols: np.ndarray, num_symbols: int, coder: str,
          lane_symbols: int) -> tuple[bytes, bytes]:
    """(table, stream) of ``symbols`` under one table of ``coder`` (adaptive: no table)."""
    if coder == "adaptive":
        return b"", adaptive.adaptive_encode(symbols, num_symbols)
    if coder == "huffman":
        data, table = huffman_encode(symbols, num_symbols, lane_symbols=lane_symbols)
        return table.to_bytes(), data
    codes = length_table(symbols, num_symbols)
    return pack_table(codes), rans_encode(symbols, codes)


def encode_streams(kept: np.ndarray, index_symbols: int, gaps: np.ndarray, gap_symbols: int,
                   coder: str, lane_symbols: int, rows: np.ndarray | None = None,
                   row_scale: np.ndarray | None = None, positions: np.ndarray | None = None,
                   shape: Sequence[int] | None = None,
                   negative: np.ndarray | None = None) -> LayerStreams:
    """A layer's kept cluster indices and position gaps, coded with ``coder`` ("auto",
    "smallest": each way they name, keeping the fewest bytes). ``rows`` (the filter of each
    kept index) and ``row_scale`` (per filter, e.g. its mean |weight|) let the ANS coders
    group filters into index contexts; the kept weights' flat ``positions`` in a weight of
    ``shape`` and ``negative`` (per codebook entry, from ``negative_entries``) give the
    adaptive coder its neighbour contexts. Without them a coder codes the indices in one
    context."""
    options: list[LayerStreams] = []
    for used in _coders(coder, index_symbols, gap_symbols):
        if used == "ans":
            index_table, index_data, contexts = _ans_index(kept, index_symbols, rows, row_scale)
        elif used == "adaptive":
            index_table, index_data, contexts = _adaptive_index(
                kept, index_symbols, rows, row_scale, positions, shape, negative)
        else:
            (index_table, index_data), contexts = _code(kept, index_symbols, used,
                                                        lane_symbols), 1
        options.append(LayerStreams(used, index_table, index_data,
                                    *_code(gaps, gap_symbols, used, lane_symbols), contexts))
    return min(options, key=lambda o: o.size)


def encode_gaps(gaps: np.ndarray, gap_symbols: int, coder: str,
                lane_symbols: int) -> tuple[str, bytes, bytes]:
    """(coder, table, stream) of a sparse tensor's position gaps, coded with ``coder``
    ("auto", "smallest": each way they name, keeping the fewest bytes)."""
    options = [(used, *_code(gaps, gap_symbols, used, lane_symbols))
               for used in _coders(coder, gap_symbols)]
    return min(options, key=lambda o: len(o[1]) + len(o[2]))


def _ans_index(kept: np.ndarray, index_symbols: int, rows: np.ndarray | None,
               row_scale: np.ndarray | None) -> tuple[bytes, bytes, int]:
    """(tables, stream, number of contexts) of a layer's indices under rANS."""
    if rows is not None and row_scale is not None and kept.size:
        num_groups, groups = group_rows(_row_counts(kept, index_symbols, rows, row_scale.size),
                                        row_scale)
        if num_groups > 1:
            context = groups[rows]
            members = [kept[context == g] for g in range(num_groups)]
            tables = [length_table(m, index_symbols) for m in members]
            segments = [(groups, uniform_table(num_groups)), *zip(members, tables)]
            return (b"".join(pack_table(t) for t in tables), rans_encode_segments(segments),
                    num_groups)
    codes = length_table(kept, index_symbols)
    return pack_table(codes), rans_encode(kept, codes), 1


def symbols_crc32(symbols: np.ndarray, gaps: np.ndarray) -> int:
    """What an ANS entry's ``symbols_crc32`` covers: its index then gap symbols as int32."""
    # the arrays' own buffers (no copy to bytes)
    crc = crc32(np.ascontiguousarray(symbols, dtype="<i4"))
    return crc32(np.ascontiguousarray(gaps, dtype="<i4"), crc)


def decode_streams(entries: Sequence[dict[str, Any]], payload: memoryview,
                   lane_symbols: int, version: int = VERSION, threads: int = 1,
                   ) -> dict[str, tuple[np.ndarray | None, np.ndarray]]:
    """{tensor name: (cluster index of each kept weight, their increasing flat positions)} of
    the shared and sparse ``entries`` (validated by ``layout._parse``; a sparse entry has no
    indices: None) of a file of format ``version``; ``SqzFormatError`` naming the layer and
    stream for a bad one (the first bad one in file order, however many ``threads`` decode).

    ANS layers are decoded ``threads`` at a time: their work runs without Python's lock
    (numba's kernels, numpy's large-array passes), so two threads decode a
    squeezenet1_0-sized file in about two thirds of the time.
    """
    decoded: dict[str, tuple[np.ndarray | None, np.ndarray]] = {}
    ans_entries = [e for e in entries if e.get("coder", "huffman") in _CHECKED_CODERS]
    if threads > 1 and len(ans_entries) > 1:
        # the largest first, so that no large layer is left for the end
        order = sorted(ans_entries, key=lambda e: -e["nnz"])
        with ThreadPoolExecutor(min(threads, len(order))) as pool:
            futures = {e["name"]: pool.submit(_decode_ans_entry, e, payload, version)
                       for e in order}
            for entry in ans_entries:  # results (and the first error) in file order
                decoded[entry["name"]] = futures[entry["name"]].result()
    else:
        for entry in ans_entries:
            decoded[entry["name"]] = _decode_ans_entry(entry, payload, version)
    # Huffman streams are decoded all together, in lanes: which entry and stream each one is
    owners: list[tuple[dict[str, Any], str]] = []
    streams = []
    for entry in entries:
        if entry.get("coder", "huffman") in _CHECKED_CODERS:
            continue
        where = f"layer {entry['name']!r}"
        kinds = (("index", "nnz"), ("gap", "num_entries"))
        for kind, count in kinds if entry["encoding"] == "shared" else kinds[1:]:
            off, length = entry[f"{kind}_table"]
            try:
                table = HuffmanTable.from_bytes(bytes(payload[off:off + length]),
                                                entry[f"{kind}_symbols"])
            except HuffmanError as e:
                raise SqzFormatError(f"{where}: {kind} table: {e}") from None
            off, length = entry[kind]
            streams.append((bytes(payload[off:off + length]), table, entry[count]))
            owners.append((entry, kind))
    try:
        symbol_lists = huffman_decode_many(streams, lane_symbols=lane_symbols)
    except HuffmanError as e:
        entry, kind = owners[e.stream] if e.stream is not None else (None, "")
        what = f"layer {entry['name']!r}: {kind} stream" if entry else "a stream"
        count = entry["nnz" if kind == "index" else "num_entries"] if entry else "?"
        raise SqzFormatError(f"{what} of {count} entries: {e.detail}") from None
    symbols: np.ndarray | None = None
    for (entry, kind), decoded_symbols in zip(owners, symbol_lists):
        if kind == "index":
            symbols = decoded_symbols
        else:
            decoded[entry["name"]] = (symbols if entry["encoding"] == "shared" else None,
                                      _positions(entry, decoded_symbols))
    return decoded


def _positions(entry: dict[str, Any], gaps: np.ndarray) -> np.ndarray:
    """The flat positions a layer's gap symbols give, exactly ``nnz`` of them."""
    where = f"layer {entry['name']!r}"
    try:
        positions = decode_positions(gaps, entry["gap_bits"], math.prod(entry["shape"]))
    except ValueError as e:
        raise SqzFormatError(f"{where}: gap stream: {e}") from None
    if positions.size != entry["nnz"]:
        raise SqzFormatError(f"{where}: gap stream gives {positions.size} kept weights, index "
                             f"{'stream' if entry['encoding'] == 'shared' else 'values'} "
                             f"{entry['nnz']}")
    return positions


def _decode_ans_entry(entry: dict[str, Any], payload: memoryview,
                      version: int) -> tuple[np.ndarray | None, np.ndarray]:
    """(index symbols, positions) of an ANS-coded shared entry, checked against its CRC
    (a sparse entry: None, positions; its CRC covers its gaps alone)."""
    where = f"layer {entry['name']!r}"

    def stream(key: str) -> memoryview:  # read in place: the decoders take any buffer
        off, length = entry[key]
        return payload[off:off + length]

    learnt = entry["coder"] == "adaptive"
    fast = None if learnt else _decode_in_one_call(entry, stream, version)
    try:
        what = f"gap stream of {entry['num_entries']} entries"
        if fast is not None:
            gaps, positions, symbols = fast
        else:
            if learnt:
                gaps = adaptive.adaptive_decode(stream("gap"), entry["num_entries"],
                                                entry["gap_symbols"])
            else:
                gaps = _ans_decode(stream("gap"), unpack_table(stream("gap_table"),
                                                               entry["gap_symbols"]),
                                   entry["num_entries"], version)
            positions = _positions(entry, gaps)
            symbols = None
            if entry["encoding"] == "shared":
                what = f"index stream of {entry['nnz']} entries"
                if learnt:
                    symbols = _decode_adaptive_index(entry, stream("index_table"),
                                                     stream("index"), positions,
                                                     stream("codebook"))
                else:
                    symbols = _decode_ans_index(entry, stream("index_table"), stream("index"),
                                                positions, version)
    except AnsError as e:
        raise SqzFormatError(f"{where}: {what}: {e}") from None
    crc = symbols_crc32(symbols if symbols is not None else np.zeros(0, np.int32), gaps)
    if crc != entry["symbols_crc32"]:
        raise SqzFormatError(f"{where}: the decoded symbols do not match their CRC32 (a damaged "
                             "stream, a wrong count, or an ANS coder that models differently)")
    return symbols, positions


def _decode_in_one_call(entry: dict[str, Any], stream: Callable[[str], memoryview],
                        version: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(gaps, positions, indices) of a shared layer of our rANS (version 6 on) decoded in one
    compiled call (``layer_decode``); None for any other layer, without numba, or where the
    streams or tables do not decode exactly: the caller then decodes it step by step, which
    names the fault."""
    if version < 6 or entry["encoding"] != "shared":
        return None
    try:
        gap_table = unpack_table(stream("gap_table"), entry["gap_symbols"])
        index_tables = unpack_tables(stream("index_table"), entry["index_symbols"],
                                     entry.get("index_contexts", 1))
    except AnsError:
        return None
    return decode_layer(stream("gap"), gap_table, entry["num_entries"],
                        max_gap(entry["gap_bits"]), math.prod(entry["shape"]), stream("index"),
                        index_tables, entry["nnz"], entry["shape"][0])


def _decode_adaptive_index(entry: dict[str, Any], groups_data: bytes, data: bytes,
                           positions: np.ndarray, codebook: bytes) -> np.ndarray:
    nsym, nnz = entry["index_symbols"], entry["nnz"]
    if nnz == 0:
        return adaptive.adaptive_decode(data, 0, nsym)
    num_groups = entry.get("index_contexts", 1)
    shape = entry["shape"]
    if num_groups == 1:
        groups = np.zeros(shape[0], dtype=np.int64)
    else:
        try:
            groups = adaptive.adaptive_decode(groups_data, shape[0], num_groups)
        except AnsError as e:
            raise AnsError(f"the groups of its {shape[0]} filters: {e}") from None
    negative = negative_entries(codebook, entry.get("codebook_dtype", "float32"))
    contexts = _index_contexts(groups.astype(np.int64), positions, shape, negative[:nsym])
    return adaptive.adaptive_decode(data, nnz, nsym, *contexts,
                                    num_contexts=_PER_GROUP * num_groups)


def _decode_ans_index(entry: dict[str, Any], tables: bytes, data: bytes,
                      positions: np.ndarray, version: int) -> np.ndarray:
    nsym, nnz = entry["index_symbols"], entry["nnz"]
    contexts = entry.get("index_contexts", 1)
    codes = unpack_tables(tables, nsym, contexts)
    if contexts == 1:
        return _ans_decode(data, codes[0], nnz, version)
    num_rows = entry["shape"][0]
    # each filter's group first; how many indices each group has then follows from the
    # groups and the positions
    reader = _ans_reader(version)(data, num_rows + nnz)
    groups = reader.read(uniform_table(contexts), num_rows)
    # the positions are sorted: each filter's kept count from where its row starts
    row_size = math.prod(entry["shape"]) // num_rows
    starts = np.searchsorted(positions, np.arange(num_rows + 1) * row_size)
    starts[-1] = nnz
    per_row = np.diff(starts)
    # The stream holds the groups in turn, each its filters' indices in filter order
    if isinstance(reader, RansReader):  # decoded straight into place, a filter's run each
        out = np.empty(nnz, dtype=np.int32)
        by_group = np.argsort(groups, kind="stable")
        reader.read_into(codes, np.bincount(groups, minlength=contexts), starts[by_group],
                         per_row[by_group], out)
    else:  # version 5's coder reads whole segments: put each filter's run back after
        sizes = np.bincount(groups, weights=per_row, minlength=contexts).astype(np.int64)
        out = ungroup(np.concatenate(reader.read_many(list(codes), sizes)), groups, per_row)
    reader.close()
    return out

__all__ = ["LayerStreams", "decode_streams", "encode_gaps", "encode_streams", "negative_entries",
           "symbols_crc32"]
