"""The ``.sqz`` layout and its validation: constants, the dtype table, ``SqzFormatError``, and
the checks that run on a file before any of it is decoded (sqz.py writes and decodes).

Every length, offset and count in a header is checked against the file here, so a damaged or
hostile file raises ``SqzFormatError`` (and nothing else) without a crash, a hang or an
allocation larger than the file justifies.
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from typing import Any

import numpy as np
import torch

from squeezelab.compress.coding import adaptive
from squeezelab.compress.coding.ans import table_bytes as ans_table_bytes
from squeezelab.compress.coding.contexts import MAX_GROUPS
from squeezelab.compress.coding.huffman import MAX_CODE_LENGTH
from squeezelab.compress.coding.sparse_index import max_total
from squeezelab.compress.format.checksum import crc32

MAGIC = b"SQZ\x00"
FORMAT = "squeezelab-sqz"
VERSION = 7
# 1: plain JSON header; 2: zlib-compressed JSON header; 3: codebooks may be stored in float16
# or bfloat16 (a shared entry's "codebook_dtype"; absent means float32, as every older file),
# and a shared entry's streams may be ANS-coded ("coder": "ans"; absent means Huffman);
# 4: the header gives each stream's length only (the streams follow each other in the
# payload in entry order, STREAM_KEYS order within an entry: offsets were a fifth of a
# compressed header), an ANS entry may code its indices in "index_contexts", and a float
# tensor may be stored as "uniform" levels; 5: a pruned float tensor that is not shared may be
# stored "sparse" (its kept values, and their positions as a gap stream); 6: ANS streams are
# squeezelab's own rANS (coding/rans.py: 16-bit words, decoded by table lookup) instead of
# constriction's AnsCoder (32-bit words), same tables; 7: a shared or sparse entry's streams may
# be "adaptive" (coding/adaptive.py: no tables, the models learnt while decoding; a shared
# entry's index_table stream then holds its filter groups, coded the same way, and its
# gap_table is empty)
READ_VERSIONS = (1, 2, 3, 4, 5, 6, 7)
#: The payload streams of each encoding, in the order an entry's streams follow each other.
STREAM_KEYS = {"dense": ("data",), "uniform": ("data",),
               "shared": ("codebook", "index_table", "index", "gap_table", "gap"),
               "sparse": ("values", "gap_table", "gap")}
#: A "uniform" entry's data: float32 low and step, then the bit-packed levels.
UNIFORM_PREFIX = struct.Struct("<ff")
#: The entropy coders of a shared entry's index and gap streams.
CODERS = ("huffman", "ans", "adaptive")
#: What a writer may ask for: a coder, or per layer the smaller of huffman and ans ("auto",
#: fast to load) or of all three ("smallest": adaptive layers load several times slower).
CODER_CHOICES = ("auto", "smallest", *CODERS)
#: The first version with each coder.
CODER_SINCE = {"huffman": 1, "ans": 3, "adaptive": 7}
#: The precisions a file may store its floats in (dense float tensors and codebooks).
FLOAT_DTYPES = ("float32", "float16", "bfloat16")
# A zlib header may expand at most this much (JSON compresses ~5-10x): no decompression bombs.
_MAX_HEADER_EXPANSION = 64
_MAX_HEADER_BYTES = 64 << 20
_PREFIX = struct.Struct("<4sHI")  # magic, version, header length
_CRC = struct.Struct("<I")
# The paper's relative-index widths: 8 bits for conv layers, 5 bits for fully connected ones.
DEFAULT_GAP_BITS = {"conv": 8, "linear": 5}
# Allocation cap: a file of B bytes may describe at most max(2**22, 4096 * B) weights. A gap
# stream needs >= 1 bit per max_gap (255 at 8 bits) weights, so real files stay far below.
_MIN_ELEMENT_CAP = 1 << 22
_ELEMENTS_PER_BYTE = 4096
# Model-spec kwargs from a file are bounded so that a lying spec cannot make a builder loop
# for a long time (e.g. num_fire = 10**9) before any tensor is compared.
_MAX_KWARG_INT = 1 << 20
_MAX_KWARG_ITEMS = 4096
_MAX_NDIM = 8

_DTYPES: dict[str, tuple[torch.dtype, str]] = {
    # name -> (torch dtype, little-endian numpy dtype of the raw bytes)
    "float32": (torch.float32, "<f4"),
    "float64": (torch.float64, "<f8"),
    "float16": (torch.float16, "<f2"),
    "bfloat16": (torch.bfloat16, "<u2"),
    "int64": (torch.int64, "<i8"),
    "int32": (torch.int32, "<i4"),
    "int16": (torch.int16, "<i2"),
    "int8": (torch.int8, "i1"),
    "uint8": (torch.uint8, "u1"),
    "bool": (torch.bool, "u1"),
}
_DTYPE_NAMES = {v[0]: k for k, v in _DTYPES.items()}
_INDEX_NP = {torch.uint8: np.uint8, torch.int16: np.int16, torch.int32: np.int32}


class SqzFormatError(ValueError):
    """A ``.sqz`` file that is damaged, hostile, of another version, or does not fit its model."""


# ------------------------------------------------------------------------------------------
# validation of a file read from disk, before anything is decoded
# ------------------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _get_int(entry: dict, key: str, where: str, low: int, high: int) -> int:
    v = entry.get(key)
    if not _is_int(v) or not low <= v <= high:
        raise SqzFormatError(f"{where}: {key!r} must be an int in [{low}, {high}], got {v!r}")
    return v


def _get_stream(entry: dict, key: str, where: str, payload_size: int) -> tuple[int, int]:
    ref = entry.get(key)
    if (not isinstance(ref, list) or len(ref) != 2 or not all(_is_int(x) for x in ref)
            or ref[0] < 0 or ref[1] < 0):
        raise SqzFormatError(
            f"{where}: {key!r} must be [offset, length] (non-negative ints), got {ref!r}"
        )
    off, length = ref
    if off + length > payload_size:
        raise SqzFormatError(
            f"{where}: {key} stream [{off}, {off + length}) lies outside the "
            f"{payload_size}-byte payload"
        )
    return off, length


def _shape_numel(entry: dict, where: str) -> tuple[list[int], int]:
    shape = entry.get("shape")
    if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
            or not all(_is_int(d) and d >= 0 for d in shape)):
        raise SqzFormatError(
            f"{where}: shape must be a list of at most {_MAX_NDIM} non-negative ints, got "
            f"{str(shape)[:80]}"
        )
    return shape, math.prod(shape)


def ans_word_bytes(version: int) -> int:
    """The word size of a version's ANS streams: 2 bytes since version 6 (coding/rans.py),
    4 before (constriction's AnsCoder)."""
    return 2 if version >= 6 else 4


def _parse(data: bytes, source: str) -> tuple[int, dict[str, Any], memoryview]:
    """Check prefix, CRC and header; return (version, header, payload)."""
    if len(data) < _PREFIX.size + _CRC.size:
        raise SqzFormatError(f"{source}: {len(data)} bytes is too short for a .sqz file")
    magic, version, header_len = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise SqzFormatError(f"{source}: not a .sqz file (magic {magic!r}, expected {MAGIC!r})")
    if version not in READ_VERSIONS:
        raise SqzFormatError(
            f"{source}: format version {version}; this squeezelab reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}"
        )
    body_end = len(data) - _CRC.size
    if _PREFIX.size + header_len > body_end:
        raise SqzFormatError(
            f"{source}: header length {header_len} runs past the end of the "
            f"{len(data)}-byte file (truncated?)"
        )
    (crc,) = _CRC.unpack_from(data, body_end)
    view = memoryview(data)
    actual = crc32(view[_PREFIX.size:body_end])
    if crc != actual:
        raise SqzFormatError(
            f"{source}: CRC32 mismatch (file says {crc:08x}, contents give {actual:08x}): "
            "the file is damaged or truncated"
        )
    header_raw = bytes(view[_PREFIX.size:_PREFIX.size + header_len])
    if version >= 2:
        header_raw = _inflate_header(header_raw, source)
    try:
        header = json.loads(header_raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError
        raise SqzFormatError(f"{source}: header is not valid UTF-8 JSON: {e}") from None
    payload = view[_PREFIX.size + header_len:body_end]
    if version >= 4:
        _offsets_from_lengths(header, len(payload), source)
    _check_header(header, len(payload), len(data), source, version)
    return version, header, payload


def _offsets_from_lengths(header: Any, payload_size: int, source: str) -> None:
    """Turn a version-4 header's stream lengths into the ``[offset, length]`` pairs of the
    older versions, in place (the streams follow each other from the payload's start), so
    that one set of checks serves every version; a length that is not one, or lengths that
    do not add up to the payload, are refused here."""
    tensors = header.get("tensors") if isinstance(header, dict) else None
    if not isinstance(tensors, list):
        return  # _check_header says what is wrong
    offset = 0
    for i, entry in enumerate(tensors):
        if not isinstance(entry, dict):
            return
        encoding = entry.get("encoding")
        for key in STREAM_KEYS.get(encoding, ()) if isinstance(encoding, str) else ():
            length = entry.get(key)
            if not _is_int(length) or length < 0:
                raise SqzFormatError(
                    f"{source}: tensor {i} ({str(entry.get('name'))[:80]!r}): {key!r} must be "
                    f"a byte length (a non-negative int), got {str(length)[:80]}"
                )
            entry[key] = [offset, length]
            offset += length
    if offset != payload_size:
        raise SqzFormatError(
            f"{source}: the tensors' streams add up to {offset} bytes, the payload holds "
            f"{payload_size}"
        )


def lengths_only(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of header entries with each ``[offset, length]`` stream reference cut to its
    length, as version 4 stores them (the streams must follow each other in order)."""
    out, offset = [], 0
    for entry in entries:
        entry = dict(entry)
        for key in STREAM_KEYS[entry["encoding"]]:
            start, length = entry[key]
            if start != offset:
                raise ValueError(f"{entry['name']}: {key} stream at {start}, not where the one "
                                 f"before it ends ({offset})")
            entry[key], offset = length, offset + length
        out.append(entry)
    return out


def _inflate_header(raw: bytes, source: str) -> bytes:
    """Decompress a version-2 header, refusing one that expands past a bound."""
    limit = min(_MAX_HEADER_BYTES, max(1 << 16, _MAX_HEADER_EXPANSION * len(raw)))
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw, limit)
    except zlib.error as e:
        raise SqzFormatError(f"{source}: header is not valid zlib data: {e}") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise SqzFormatError(
            f"{source}: header does not decompress within {limit} bytes (damaged, or more "
            f"than {_MAX_HEADER_EXPANSION}x its {len(raw)} compressed bytes)"
        )
    return out


def _check_kwargs(value: Any, where: str, depth: int = 0) -> None:
    if depth > 4:
        raise SqzFormatError(f"{where}: model kwargs are nested too deeply")
    if isinstance(value, dict):
        if len(value) > _MAX_KWARG_ITEMS:
            raise SqzFormatError(f"{where}: too many model kwargs ({len(value)})")
        for k, v in value.items():
            _check_kwargs(v, f"{where}.{k}", depth + 1)
    elif isinstance(value, list):
        if len(value) > _MAX_KWARG_ITEMS:
            raise SqzFormatError(f"{where}: list of {len(value)} items is too long")
        for v in value:
            _check_kwargs(v, where, depth + 1)
    elif _is_int(value):
        if abs(value) > _MAX_KWARG_INT:
            raise SqzFormatError(
                f"{where}: model argument {value} is beyond +-{_MAX_KWARG_INT}; refusing to "
                "build such a model from a file"
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise SqzFormatError(f"{where}: model argument {value} is not finite")
    elif not (value is None or isinstance(value, (str, bool))):
        raise SqzFormatError(f"{where}: unexpected model argument {value!r}")


def _check_header(header: Any, payload_size: int, file_size: int, source: str,
                  version: int = VERSION) -> None:
    if not isinstance(header, dict):
        raise SqzFormatError(f"{source}: header must be a JSON object, got {type(header).__name__}")
    if header.get("format") != FORMAT:
        raise SqzFormatError(f"{source}: header format is {header.get('format')!r}, not {FORMAT!r}")
    if header.get("payload_size") != payload_size:
        raise SqzFormatError(
            f"{source}: header says the payload has {header.get('payload_size')!r} bytes, the "
            f"file holds {payload_size}"
        )
    spec = header.get("model")
    if (not isinstance(spec, dict) or not isinstance(spec.get("name"), str)
            or not isinstance(spec.get("kwargs"), dict)):
        raise SqzFormatError(f"{source}: header 'model' must be {{'name': str, 'kwargs': dict}}")
    _check_kwargs(spec["kwargs"], f"{source}: model kwargs")
    names = header.get("class_names")
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise SqzFormatError(f"{source}: class_names must be a list of strings or null")
    if not isinstance(header.get("meta"), dict):
        raise SqzFormatError(f"{source}: header 'meta' must be a JSON object")
    _get_int(header, "huffman_lane_symbols", source, 1, 65535 // MAX_CODE_LENGTH)
    tensors = header.get("tensors")
    if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
        raise SqzFormatError(f"{source}: header 'tensors' must be a list of objects")
    cap = max(_MIN_ELEMENT_CAP, _ELEMENTS_PER_BYTE * file_size)
    total = 0
    seen: set[str] = set()
    for i, entry in enumerate(tensors):
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise SqzFormatError(f"{source}: tensor {i} has no name")
        where = f"layer {name!r}"
        if name in seen:
            raise SqzFormatError(f"{where}: listed twice")
        seen.add(name)
        shape, numel = _shape_numel(entry, where)
        total += numel
        if total > cap:
            raise SqzFormatError(
                f"{where}: tensors add up to {total} elements, more than a {file_size}-byte "
                f"file can hold (cap {cap})"
            )
        dtype = entry.get("dtype")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise SqzFormatError(f"{where}: unknown dtype {dtype!r} (expected one of "
                                 f"{sorted(_DTYPES)})")
        encoding = entry.get("encoding")
        if encoding == "dense":
            _, length = _get_stream(entry, "data", where, payload_size)
            itemsize = np.dtype(_DTYPES[dtype][1]).itemsize
            if length != numel * itemsize:
                raise SqzFormatError(
                    f"{where}: {length} bytes of data, but shape {shape} in {dtype} needs "
                    f"{numel * itemsize}"
                )
        elif encoding == "uniform":
            if dtype != "float32":
                raise SqzFormatError(f"{where}: a uniform tensor loads as float32, got {dtype!r}")
            bits = _get_int(entry, "bits", where, 1, 16)
            _, length = _get_stream(entry, "data", where, payload_size)
            need = UNIFORM_PREFIX.size + (numel * bits + 7) // 8
            if length != need:
                raise SqzFormatError(f"{where}: {length} bytes of data, but {numel} {bits}-bit "
                                     f"levels need {need}")
        elif encoding == "shared":
            _check_shared_entry(entry, where, shape, numel, payload_size, version)
        elif encoding == "sparse":
            _check_sparse_entry(entry, where, shape, numel, payload_size, version)
        else:
            raise SqzFormatError(f"{where}: unknown encoding {encoding!r} (dense, uniform, "
                                 "shared or sparse)")


def _get_coder(entry: dict, where: str, version: int) -> str:
    coder = entry.get("coder", "huffman")
    if coder not in CODERS:
        raise SqzFormatError(f"{where}: coder must be one of {CODERS}, got {coder!r}")
    if version < CODER_SINCE[coder]:
        raise SqzFormatError(f"{where}: the {coder} coder came with format version "
                             f"{CODER_SINCE[coder]}; this file is version {version}")
    return coder


def _check_shared_entry(entry: dict, where: str, shape: list, numel: int, payload_size: int,
                        version: int):
    if entry.get("dtype") != "float32":
        raise SqzFormatError(f"{where}: a shared tensor must be float32, got {entry['dtype']!r}")
    bits = _get_int(entry, "weight_bits", where, 1, 16)
    gap_bits = _get_int(entry, "gap_bits", where, 1, 16)
    cb_dtype = entry.get("codebook_dtype", "float32")
    if cb_dtype not in FLOAT_DTYPES:
        raise SqzFormatError(f"{where}: codebook_dtype must be one of {FLOAT_DTYPES}, got "
                             f"{cb_dtype!r}")
    cb_bytes = np.dtype(_DTYPES[cb_dtype][1]).itemsize * 2**bits
    _, cb_len = _get_stream(entry, "codebook", where, payload_size)
    if cb_len != cb_bytes:
        raise SqzFormatError(
            f"{where}: codebook has {cb_len} bytes, a {bits}-bit {cb_dtype} codebook needs "
            f"{cb_bytes}"
        )
    coder = _get_coder(entry, where, version)
    index_symbols = _get_int(entry, "index_symbols", where, 0,
                             min(2**bits, adaptive.MAX_SYMBOLS) if coder == "adaptive"
                             else 2**bits)
    contexts = 1
    if "index_contexts" in entry:
        if coder == "huffman":
            raise SqzFormatError(f"{where}: index contexts need an ANS coder, not {coder!r}")
        contexts = _get_int(entry, "index_contexts", where, 2,
                            max(2, min(MAX_GROUPS, shape[0] if shape else 1)))
    _, length = _get_stream(entry, "index_table", where, payload_size)
    if coder == "adaptive":  # the filter groups' stream, or nothing for one group
        model = contexts * adaptive.CLASSES ** 2 * max(index_symbols, 1)
        if model > adaptive.MAX_MODEL:
            raise SqzFormatError(f"{where}: {contexts} group(s) of {index_symbols} symbols "
                                 f"need an adaptive model of {model} counts, more than "
                                 f"{adaptive.MAX_MODEL}")
        if (length == 0) != (contexts == 1) or length % 2:
            raise SqzFormatError(f"{where}: index_table has {length} bytes; an adaptive entry's "
                                 f"{contexts} group(s) need "
                                 f"{'none' if contexts == 1 else 'whole 16-bit words'}")
    else:
        one = ((index_symbols * 5 + 7) // 8 if coder == "huffman"
               else ans_table_bytes(index_symbols))
        if length != contexts * one:
            what = f"{contexts} tables of " if contexts > 1 else ""
            raise SqzFormatError(f"{where}: index_table has {length} bytes, {what}"
                                 f"{index_symbols} {coder} table entries need {contexts * one}")
    _, index_len = _get_stream(entry, "index", where, payload_size)
    if coder == "huffman":
        # every Huffman code is at least one bit: the count is bounded by the stream's size
        nnz = _get_int(entry, "nnz", where, 0, 8 * index_len)
    else:
        # an ANS symbol may cost almost nothing: the count is bounded by the shape (each gap
        # entry moves at least one position on), which the file-size cap bounds
        nnz = _get_int(entry, "nnz", where, 0, numel)
        word = ans_word_bytes(version)
        if index_len % word:
            raise SqzFormatError(f"{where}: index stream of {index_len} bytes is not whole "
                                 f"{8 * word}-bit ANS words")
    _check_positions(entry, where, shape, numel, payload_size, coder, gap_bits, nnz, version)


def _check_sparse_entry(entry: dict, where: str, shape: list, numel: int, payload_size: int,
                        version: int):
    """A "sparse" entry: ``nnz`` kept values in ``dtype`` (a float dtype), then their
    positions' gap table and stream (the gap stream of a shared entry)."""
    dtype = entry.get("dtype")
    if dtype not in FLOAT_DTYPES:
        raise SqzFormatError(f"{where}: a sparse tensor's values are one of {FLOAT_DTYPES}, "
                             f"got {dtype!r}")
    gap_bits = _get_int(entry, "gap_bits", where, 1, 16)
    coder = _get_coder(entry, where, version)
    itemsize = np.dtype(_DTYPES[dtype][1]).itemsize
    nnz = _get_int(entry, "nnz", where, 0, numel)
    _, values_len = _get_stream(entry, "values", where, payload_size)
    if values_len != nnz * itemsize:
        raise SqzFormatError(f"{where}: {values_len} bytes of values, but {nnz} kept {dtype} "
                             f"values need {nnz * itemsize}")
    _check_positions(entry, where, shape, numel, payload_size, coder, gap_bits, nnz, version)


def _check_positions(entry: dict, where: str, shape: list, numel: int, payload_size: int,
                     coder: str, gap_bits: int, nnz: int, version: int) -> None:
    """The gap table and stream that give the positions of ``nnz`` kept weights, and the
    counts that go with them (``num_entries``, ``num_fillers``, ANS's ``symbols_crc32``)."""
    gap_symbols = _get_int(entry, "gap_symbols", where, 0,
                           min(2**gap_bits, adaptive.MAX_SYMBOLS) if coder == "adaptive"
                           else 2**gap_bits)
    _, length = _get_stream(entry, "gap_table", where, payload_size)
    need = {"huffman": (gap_symbols * 5 + 7) // 8, "ans": ans_table_bytes(gap_symbols),
            "adaptive": 0}[coder]
    if length != need:
        raise SqzFormatError(f"{where}: gap_table has {length} bytes, {gap_symbols} {coder} "
                             f"table entries need {need}")
    _, gap_len = _get_stream(entry, "gap", where, payload_size)
    if coder == "huffman":
        num_entries = _get_int(entry, "num_entries", where, nnz, 8 * gap_len)
    else:
        num_entries = _get_int(entry, "num_entries", where, nnz, max(numel, nnz))
        word = ans_word_bytes(version)
        if gap_len % word:
            raise SqzFormatError(f"{where}: gap stream of {gap_len} bytes is not whole "
                                 f"{8 * word}-bit ANS words")
        _get_int(entry, "symbols_crc32", where, 0, 2**32 - 1)
    _get_int(entry, "num_fillers", where, num_entries - nnz, num_entries - nnz)
    if numel > max_total(num_entries, gap_bits):
        raise SqzFormatError(
            f"{where}: shape {shape} has {numel} weights, but {num_entries} entries of "
            f"{gap_bits}-bit gaps describe at most {max_total(num_entries, gap_bits)}"
        )
    if nnz > numel:
        raise SqzFormatError(f"{where}: {nnz} kept weights in a tensor of {numel}")
