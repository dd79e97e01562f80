"""The ``.sqz`` compressed model file (Deep Compression, Han et al., arXiv 1510.00149: pruning +
k-means weight sharing + Huffman coding, stored as the paper's section 4 describes).

Layout (integers little-endian)::

    b"SQZ\\x00" | u16 version | u32 header length | header | payload | u32 CRC32

The header is UTF-8 JSON, zlib-compressed since version 2 (a per-tensor JSON entry is about
165 bytes, a tenth of a pruned 4-bit SqueezeNet's file; compressed it is a fifth of that).
Versions 1 (plain JSON header), 2 (float32 codebooks only) and 3 (stream offsets in the header)
are still read. The CRC32 (zlib's, ``checksum.crc32``) covers header and payload. The header is
self-describing: the registry model spec (``{"name", "kwargs"}``), class names, free ``meta``
(metrics, config), the payload size, and per state-dict tensor its name, shape, dtype and
encoding, with the byte length of each of its streams (version 4; the streams follow each
other in the payload, in entry order and ``layout.STREAM_KEYS`` order; before version 4 each
was ``[offset, length]``):

* ``"dense"``: raw little-endian bytes (biases, BatchNorm tensors, unshared weights): ``data``.
* ``"sparse"`` (version 5; ``sparse_tensor.py``): a pruned tensor that is not shared: its
  ``nnz`` kept values in ``dtype`` (``values``), then their positions as a shared entry's gap
  table and stream (``gap_table``, ``gap``; ``coder``, ``symbols_crc32`` as there). Written
  wherever it takes fewer bytes than ``"dense"``.
* ``"uniform"`` (version 4, ``dense_bits``): a float tensor as ``bits``-bit levels between its
  minimum and maximum (``uniform_levels.py``): ``data`` = float32 low and step, then the
  bit-packed levels.
* ``"shared"`` (a weight-shared Conv/Linear, see ``weight_sharing.py``): ``codebook``
  (``[2**weight_bits]`` in ``codebook_dtype``: float32 unless the file stores its floats in
  float16 or bfloat16, version 3), the cluster indices of the kept weights in flattened order,
  Huffman-coded (``index_table`` = 5-bit code lengths of ``index_symbols`` symbols, ``index``
  = the coded stream, ``nnz`` symbols), and their positions as a relative-index gap stream
  (``sparse_index.py``: ``gap_bits``-bit gaps with filler entries, Huffman-coded over the
  ``gap_symbols`` gap values: ``gap_table``, ``gap``, ``num_entries`` symbols). Since version
  3 an entry with ``"coder": "ans"`` codes both streams with rANS instead (``ans.py``: the
  tables are 6-bit quarter-bit length codes, the streams constriction's 32-bit words) and
  carries ``symbols_crc32``, the CRC32 of its decoded index then gap symbols (int32,
  little-endian); since version 4 such an entry may split its filters into ``index_contexts``
  groups with a table each (``contexts.py``); since version 6 its streams are our own rANS
  (``rans.py``: 16-bit words, decoded by table lookup); since version 7 ``"coder":
  "adaptive"`` codes them with models learnt while decoding (``adaptive.py``: no tables; the
  filter groups, if more than one, in ``index_table``; ``gap_table`` empty). The writer picks,
  per layer, whichever of the coders it is asked to try gives fewer bytes (``streams.py``
  codes and decodes these streams; this module is the container around them).

Reading checks every length, offset and count against the file before it is used
(``layout.py`` holds the layout constants and those checks), so a damaged
or hostile file raises ``SqzFormatError`` (and nothing else) without a crash, a hang or an
allocation larger than the file justifies. ``load_compressed`` rebuilds the model with
``create_model`` and fills each shared layer with ``dense_weight(codebook, indices, mask)``, the
same function the shared model computes with, so the outputs are bit-identical.
"""
from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from squeezelab.compress.coding.huffman import DEFAULT_LANE_SYMBOLS
from squeezelab.compress.coding.sparse_index import encode_positions, pack_bits, unpack_bits
from squeezelab.compress.format.checksum import crc32
from squeezelab.compress.format.decoded import SharedTensor, SqzFile
from squeezelab.compress.format.layout import (  # noqa: F401  (layout names re-exported)
    _CRC,
    _DTYPE_NAMES,
    _DTYPES,
    _INDEX_NP,
    _PREFIX,
    CODER_CHOICES,
    DEFAULT_GAP_BITS,
    FLOAT_DTYPES,
    FORMAT,
    MAGIC,
    READ_VERSIONS,
    UNIFORM_PREFIX,
    VERSION,
    SqzFormatError,
    _parse,
    lengths_only,
)
from squeezelab.compress.format.sparse_tensor import (
    default_gap_bits,
    encode_sparse,
    pruned_weight,
    sparse_tensor,
)
from squeezelab.compress.format.streams import (
    decode_streams,
    encode_streams,
    negative_entries,
    symbols_crc32,
)
from squeezelab.compress.quantization import uniform_levels
from squeezelab.compress.quantization.weight_sharing import (
    dense_weight,
    prepare_shared_,
    shared_modules,
)
from squeezelab.fileio import atomic_write_bytes, json_default
from squeezelab.models import create_model, create_skeleton, model_spec, unwrap_model


# ------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------
class _Payload:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> list[int]:
        ref = [self.size, len(data)]
        self.parts.append(data)
        self.size += len(data)
        return ref


def _raw_bytes(t: torch.Tensor) -> tuple[str, bytes]:
    name = _DTYPE_NAMES.get(t.dtype)
    if name is None:
        raise ValueError(f"dtype {t.dtype} cannot be stored in a .sqz file ({sorted(_DTYPES)})")
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    elif t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return name, t.numpy().astype(_DTYPES[name][1], copy=False).tobytes()


def _stored_float_keys(model: nn.Module) -> list[str]:
    """The state-dict keys whose float values a file with reduced ``float_dtype`` rounds: every
    floating-point tensor that is stored dense, and every codebook (shared weights are rebuilt
    from their codebook, so they follow it)."""
    shared = shared_modules(model)
    derived = set(shared)
    for weight_name in shared:
        prefix = weight_name[: -len("weight")]
        derived.update({prefix + "weight_indices", prefix + "weight_mask"})
    return [k for k, t in model.state_dict().items()
            if k not in derived and t.is_floating_point()]


def _check_float_dtype(float_dtype: str) -> torch.dtype:
    if float_dtype not in FLOAT_DTYPES:
        raise ValueError(f"float_dtype must be one of {FLOAT_DTYPES}, got {float_dtype!r}")
    return _DTYPES[float_dtype][0]


@torch.no_grad()
def round_stored_floats_(model: nn.Module, float_dtype: str,
                         dense_bits: int | None = None) -> list[str]:
    """Round, in place, the floats a .sqz file stores (biases, BatchNorm tensors, other dense
    float tensors, codebooks) as ``save_compressed(model, ..., float_dtype=float_dtype,
    dense_bits=dense_bits)`` stores them, so that the model computes exactly what
    ``load_compressed`` of that file gives: codebooks (and, without ``dense_bits``, the dense
    floats) to ``float_dtype`` and back; with ``dense_bits``, the dense floats the file stores
    as uniform levels (those where levels take fewer bytes, pruned weights never) to their
    levels. Shared layers' weights are recomputed from the rounded codebooks. Returns the keys
    rounded (none for float32 without ``dense_bits``)."""
    dtype = _check_float_dtype(float_dtype)
    model = unwrap_model(model)
    state = model.state_dict()
    keys = _stored_float_keys(model)
    codebooks = {name[: -len("weight")] + "codebook" for name in shared_modules(model)}
    rounded = []
    for key in keys:
        t = state[key]
        if (dense_bits is not None and key not in codebooks and not pruned_weight(t)
                and _levels_pay(t.numel(), dense_bits, dtype)):
            levels = uniform_levels.round_to_levels(t.detach().cpu().float().numpy(), dense_bits)
            t.copy_(torch.from_numpy(levels).to(t.dtype))
        elif dtype != torch.float32:
            t.copy_(t.to(dtype).to(t.dtype))
        else:
            continue
        rounded.append(key)
    for m in shared_modules(model).values():
        m.weight = dense_weight(m.codebook, m.weight_indices, m.weight_mask)
    return rounded


def save_compressed(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    class_names: list[str] | None = None,
    meta: dict[str, Any] | None = None,
    gap_bits: int | None = None,
    lane_symbols: int = DEFAULT_LANE_SYMBOLS,
    float_dtype: str = "float32",
    coder: str = "auto",
    dense_bits: int | None = None,
) -> Path:
    """Write ``model`` (a registry model, possibly weight-shared) to ``path`` as a .sqz file.

    Shared layers (``weight_sharing.shared_modules``) are stored as codebook + Huffman-coded
    indices + Huffman-coded relative positions of the kept weights, with ``gap_bits``-bit gaps
    (default: the paper's 8 for conv, 5 for fully connected weights); a pruned weight that is
    not shared is stored sparse (its kept values and the same position stream) where that
    takes fewer bytes; every other tensor of the state dict is stored raw. ``float_dtype``
    ("float16", "bfloat16") stores the floats (dense float tensors, sparse values, codebooks)
    in half the bytes; the loaded model then computes what ``round_stored_floats_`` makes of
    this one. ``coder``: "huffman" (the paper's), "ans" (rANS, ``coding/ans.py``), "adaptive"
    (``coding/adaptive.py``: no tables, the fewest bytes, several times slower to decode),
    "auto": per layer, whichever of huffman and ans gives fewer bytes, or "smallest": of all
    three (or the "auto" file, where that is smaller after all: a coded layer's header fields
    can outweigh a few bytes saved). ``dense_bits`` stores the dense float tensors
    (pruned weights excepted) as per-tensor uniform levels of that many bits instead, each
    where that takes fewer bytes (``uniform_levels.py``; the loaded model then computes what
    ``round_stored_floats_(model, float_dtype, dense_bits)`` makes of this one). The write is
    atomic (temporary file + rename).
    """
    float_torch = _check_float_dtype(float_dtype)
    if coder not in CODER_CHOICES:
        raise ValueError(f"coder must be one of {CODER_CHOICES}, got {coder!r}")
    model = unwrap_model(model)
    spec = model_spec(model)
    if gap_bits is not None and (isinstance(gap_bits, bool) or not isinstance(gap_bits, int)
                                 or not 1 <= gap_bits <= 16):
        raise ValueError(f"gap_bits must be an int in [1, 16] or None, got {gap_bits!r}")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
    data = _encode_file(model, spec, class_names, meta, gap_bits, lane_symbols, float_torch,
                        coder, dense_bits)
    if coder == "smallest":
        # layers are chosen by their streams; a coded layer's header fields (its CRC) can
        # outweigh a few bytes saved, so the whole file must beat "auto"'s too
        data = min(data, _encode_file(model, spec, class_names, meta, gap_bits, lane_symbols,
                                      float_torch, "auto", dense_bits), key=len)
    path = Path(path)
    atomic_write_bytes(path, data)
    return path


def _encode_file(model: nn.Module, spec: dict[str, Any], class_names: list[str] | None,
                 meta: dict[str, Any] | None, gap_bits: int | None, lane_symbols: int,
                 float_torch: torch.dtype, coder: str, dense_bits: int | None) -> bytes:
    """The bytes of the .sqz file of ``model`` (``save_compressed``'s arguments, checked)."""
    shared = shared_modules(model)
    # A shared layer's codebook, indices and mask become one "shared" entry under the name of
    # the weight they replace (where the codebook sits in the state dict's order).
    by_codebook, skip = {}, set()
    for weight_name in shared:
        prefix = weight_name[: -len("weight")]
        by_codebook[prefix + "codebook"] = weight_name
        skip.update({prefix + "weight_indices", prefix + "weight_mask"})
    payload = _Payload()
    entries: list[dict[str, Any]] = []
    for key, tensor in model.state_dict().items():
        if key in by_codebook:
            name = by_codebook[key]
            entries.append(_encode_shared(name, shared[name], payload, gap_bits, lane_symbols,
                                          float_torch, coder))
        elif key in skip:
            continue
        elif pruned_weight(tensor):  # sparse where that is smaller, in float_dtype either way
            stored = tensor.to(float_torch)
            entries.append(encode_sparse(key, stored, payload.add, gap_bits, coder, lane_symbols)
                           or _dense_entry(key, stored, payload))
        elif (dense_bits is not None and tensor.is_floating_point()
              and _levels_pay(tensor.numel(), dense_bits, float_torch)):
            entries.append(_encode_uniform(key, tensor, dense_bits, payload))
        else:
            if tensor.is_floating_point() and float_torch != torch.float32:
                tensor = tensor.to(float_torch)
            entries.append(_dense_entry(key, tensor, payload))
    header = {
        "format": FORMAT,
        "model": spec,
        "class_names": class_names,
        "meta": meta or {},
        "huffman_lane_symbols": lane_symbols,
        "payload_size": payload.size,
        "tensors": lengths_only(entries),
    }
    header_json = json.dumps(header, separators=(",", ":"), default=json_default).encode()
    header_bytes = zlib.compress(header_json, 9)
    body = header_bytes + b"".join(payload.parts)
    data = _PREFIX.pack(MAGIC, VERSION, len(header_bytes)) + body
    return data + _CRC.pack(crc32(body))


def _dense_entry(name: str, tensor: torch.Tensor, payload: _Payload) -> dict[str, Any]:
    dtype_name, raw = _raw_bytes(tensor)
    return {"name": name, "shape": list(tensor.shape), "dtype": dtype_name,
            "encoding": "dense", "data": payload.add(raw)}


def _levels_pay(numel: int, bits: int, float_dtype: torch.dtype) -> bool:
    """Whether ``bits``-bit levels (with their 8-byte low and step) store a tensor of ``numel``
    values in fewer bytes than ``float_dtype`` does; a tiny tensor stays in ``float_dtype``."""
    raw = numel * torch.empty(0, dtype=float_dtype).element_size()
    return UNIFORM_PREFIX.size + (numel * bits + 7) // 8 < raw


def _encode_uniform(name: str, tensor: torch.Tensor, bits: int,
                    payload: _Payload) -> dict[str, Any]:
    try:
        low, step, levels = uniform_levels.quantize(tensor.detach().cpu().float().numpy(), bits)
    except ValueError as e:
        raise ValueError(f"tensor {name!r}: {e}") from None
    data = UNIFORM_PREFIX.pack(low, step) + pack_bits(levels.ravel().astype(np.int64), bits)
    return {"name": name, "shape": list(tensor.shape), "dtype": "float32",
            "encoding": "uniform", "bits": bits, "data": payload.add(data)}


def _encode_shared(
    weight_name: str, module: nn.Module, payload: _Payload, gap_bits: int | None,
    lane_symbols: int, float_dtype: torch.dtype = torch.float32, coder: str = "auto",
) -> dict[str, Any]:
    codebook = module.codebook.detach().cpu().to(float_dtype).contiguous()
    bits = int(module.weight_bits)
    if codebook.numel() != 2**bits:
        raise ValueError(
            f"layer {weight_name!r}: codebook has {codebook.numel()} entries, expected 2**{bits}"
        )
    mask = module.weight_mask.detach().cpu().reshape(-1).numpy()
    indices = module.weight_indices.detach().cpu().reshape(-1).to(torch.int64).numpy()
    shape = list(module.weight_mask.shape)
    g = gap_bits if gap_bits is not None else default_gap_bits(module.weight_mask.shape)
    kept = indices[mask]
    gaps, is_filler = encode_positions(mask, g)
    index_symbols = int(kept.max()) + 1 if kept.size else 0
    gap_symbols = int(gaps.max()) + 1 if gaps.size else 0
    # the filter of each kept weight, and each filter's mean |weight|: what the ANS coder
    # groups filters by for its index contexts
    num_rows = shape[0] if shape else 1
    positions = np.flatnonzero(mask)
    rows = positions // max(1, mask.size // max(1, num_rows))
    magnitude = np.abs(codebook.to(torch.float32).numpy())[kept]
    row_scale = (np.bincount(rows, magnitude, minlength=num_rows)
                 / np.maximum(np.bincount(rows, minlength=num_rows), 1))
    codebook_dtype, codebook_bytes = _raw_bytes(codebook)
    streams = encode_streams(kept, index_symbols, gaps, gap_symbols, coder, lane_symbols,
                             rows=rows, row_scale=row_scale, positions=positions, shape=shape,
                             negative=negative_entries(codebook_bytes, codebook_dtype))
    entry = {
        "name": weight_name, "shape": shape, "dtype": "float32", "encoding": "shared",
        "weight_bits": bits, "gap_bits": g,
        "nnz": int(kept.size), "num_entries": int(gaps.size),
        "num_fillers": int(is_filler.sum()),
        "codebook": payload.add(codebook_bytes),
        "index_symbols": index_symbols,
        "index_table": payload.add(streams.index_table),
        "index": payload.add(streams.index),
        "gap_symbols": gap_symbols,
        "gap_table": payload.add(streams.gap_table),
        "gap": payload.add(streams.gap),
    }
    if codebook_dtype != "float32":  # absent means float32, as in every version-2 file
        entry["codebook_dtype"] = codebook_dtype
    if streams.coder != "huffman":  # absent means Huffman, as in every version-2 file
        entry["coder"] = streams.coder
        entry["symbols_crc32"] = symbols_crc32(kept, gaps)
        if streams.index_contexts > 1:  # absent means one, as in every version-3 file
            entry["index_contexts"] = streams.index_contexts
    return entry


def _read_source(source: str | os.PathLike | bytes) -> tuple[bytes, Path | None, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), None, "<bytes>"
    path = Path(source)
    try:
        return path.read_bytes(), path, str(path)
    except OSError as e:
        raise SqzFormatError(f"cannot read {path}: {e.strerror or e}") from None


def _dense_tensor(raw: memoryview, dtype: str, shape: list[int], where: str) -> torch.Tensor:
    """A tensor from its raw little-endian bytes (lengths were checked by ``_parse``)."""
    torch_dtype, np_dtype = _DTYPES[dtype]
    arr = np.frombuffer(raw, dtype=np_dtype).reshape(shape)
    t = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="), copy=True))
    if torch_dtype == torch.bfloat16:
        t = t.view(torch.int16).view(torch.bfloat16)
    elif torch_dtype == torch.bool:
        if t.numel() and int(t.max()) > 1:
            raise SqzFormatError(f"{where}: bool tensor holds values > 1")
        t = t.to(torch.bool)
    return t


def _uniform_tensor(entry: dict[str, Any], payload: memoryview) -> torch.Tensor:
    """A tensor stored as uniform levels (the data length was checked by ``_parse``)."""
    off, length = entry["data"]
    low, step = UNIFORM_PREFIX.unpack_from(payload, off)
    if not (math.isfinite(low) and math.isfinite(step)):
        raise SqzFormatError(f"layer {entry['name']!r}: uniform levels with a non-finite low "
                             f"({low}) or step ({step})")
    numel = math.prod(entry["shape"])
    levels = unpack_bits(bytes(payload[off + UNIFORM_PREFIX.size:off + length]), entry["bits"],
                         numel)
    values = uniform_levels.dequantize(low, step, levels)
    return torch.from_numpy(values.reshape(entry["shape"]))


def read_sqz(source: str | os.PathLike | bytes) -> SqzFile:
    """Parse and decode a .sqz file (a path or its bytes) without building the model.

    Raises ``SqzFormatError`` for anything wrong with the file.
    """
    data, path, name = _read_source(source)
    version, header, payload = _parse(data, name)
    dense: dict[str, torch.Tensor] = {}
    shared_entries = []  # and sparse ones: both have a gap stream
    for entry in header["tensors"]:
        if entry["encoding"] == "dense":
            off, length = entry["data"]
            dense[entry["name"]] = _dense_tensor(payload[off:off + length], entry["dtype"],
                                                 entry["shape"], f"layer {entry['name']!r}")
        elif entry["encoding"] == "uniform":
            dense[entry["name"]] = _uniform_tensor(entry, payload)
        else:
            shared_entries.append(entry)
    decoded = decode_streams(shared_entries, payload, header["huffman_lane_symbols"], version,
                             threads=torch.get_num_threads())
    shared: dict[str, SharedTensor] = {}
    for entry in shared_entries:
        where = f"layer {entry['name']!r}"
        symbols, positions = decoded[entry["name"]]
        if entry["encoding"] == "sparse":
            dense[entry["name"]] = sparse_tensor(entry, payload, positions)
            continue
        off, length = entry["codebook"]
        codebook = _dense_tensor(payload[off:off + length], entry.get("codebook_dtype", "float32"),
                                 [2 ** entry["weight_bits"]], where).to(torch.float32)
        shared[entry["name"]] = SharedTensor(
            codebook=codebook, shape=list(entry["shape"]), positions=positions,
            symbols=symbols, weight_bits=entry["weight_bits"], gap_bits=entry["gap_bits"],
            num_fillers=int(entry["num_fillers"]),
        )
    return SqzFile(path=path, version=version, header=header, file_size=len(data),
                   dense=dense, shared=shared)


# ------------------------------------------------------------------------------------------
# rebuilding the model
# ------------------------------------------------------------------------------------------
class _BudgetExceeded(Exception):
    pass


@contextmanager
def _registration_budget(limit: int) -> Iterator[None]:
    """Abort a model builder that registers more than ``limit`` parameters and buffers."""
    count = 0

    def hook(module: nn.Module, name: str, value: Any) -> None:
        nonlocal count
        count += 1
        if count > limit:
            raise _BudgetExceeded

    reg = nn.modules.module
    handles = [reg.register_module_parameter_registration_hook(hook),
               reg.register_module_buffer_registration_hook(hook)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _build_model(header: dict[str, Any], source: str) -> tuple[nn.Module, dict[str, Any]]:
    """``create_model`` from the header's spec, checked against the header's tensors; returns
    the model and the dtype of each tensor of its state dict.

    The model is first built on the meta device without initialisation (``create_skeleton``:
    no memory, half the time, and a copy of the last one built for the same spec where there
    is one, a quarter of that), under a cap on the number of parameters and buffers the builder
    may register, and its state-dict shapes are compared with the file; its tensors are then
    the decoded ones, assigned by ``load_compressed`` (nothing is allocated twice).
    """
    spec = header["model"]
    entries = {e["name"]: e for e in header["tensors"]}
    where = f"{source}: model {spec['name']!r} {spec['kwargs']}"
    try:
        with _registration_budget(2 * len(entries) + 64):
            model = create_skeleton(spec["name"], **spec["kwargs"])
    except _BudgetExceeded:
        raise SqzFormatError(
            f"{where} has far more tensors than the {len(entries)} the file holds"
        ) from None
    except Exception as e:  # noqa: BLE001 -- any builder error means a bad spec in the file
        raise SqzFormatError(f"{where} cannot be built: {type(e).__name__}: {e}") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(entries))
    unexpected = sorted(set(entries) - set(own))
    if missing or unexpected:
        raise SqzFormatError(
            f"{where}: tensors do not fit the model: missing {missing[:3]}"
            f"{' ...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
            f"{' ...' if len(unexpected) > 3 else ''}"
        )
    for key, t in own.items():
        e = entries[key]
        if list(t.shape) != e["shape"]:
            raise SqzFormatError(
                f"layer {key!r}: file shape {e['shape']} does not fit the model's "
                f"{list(t.shape)}"
            )
        file_dtype = _DTYPES[e["dtype"]][0]
        if file_dtype != t.dtype and not (file_dtype.is_floating_point
                                          and t.dtype.is_floating_point):
            raise SqzFormatError(f"layer {key!r}: file dtype {e['dtype']} does not fit {t.dtype}")
    # The skeleton stays on the meta device: load_compressed's load_state_dict(assign=True)
    # hands it every tensor. Non-persistent buffers are not in the file, so a model with any
    # is built for real, to give them their initial values.
    persistent = set(own)
    if not all(n in persistent for n, _ in model.named_buffers()):
        model = create_model(spec["name"], **spec["kwargs"])
    return model, {key: t.dtype for key, t in own.items()}


def load_compressed(path: str | os.PathLike | bytes, *, keep_shared: bool = False) -> nn.Module:
    """Rebuild the model stored in a .sqz file, in eval mode.

    Shared layers get the dense weight ``dense_weight(codebook, indices, mask)``, so outputs
    equal the shared model's exactly. With ``keep_shared=True`` they stay weight-shared
    (codebook + indices + mask, ready for more centroid fine-tuning). ``model.sqz_header`` is
    the file's header (meta, class names). Raises ``SqzFormatError`` for any problem.
    """
    # (Building the model in a thread beside the decoding was measured slower: the build is
    # Python that holds the interpreter's lock the decoding threads also need.)
    sqz = read_sqz(path)
    source = str(sqz.path) if sqz.path else "<bytes>"
    model, dtypes = _build_model(sqz.header, source)
    if keep_shared:
        prepare_shared_(model, {n: s.weight_bits for n, s in sqz.shared.items()})
        state = dict(sqz.dense)
        for name, s in sqz.shared.items():
            prefix = name[: -len("weight")]
            state[prefix + "codebook"] = s.codebook
            state[prefix + "weight_indices"] = s.indices
            state[prefix + "weight_mask"] = s.mask
    else:
        state = sqz.state_dict()
    # assign=True hands the decoded tensors to the model without another copy
    state = {k: v if k not in dtypes or v.dtype == dtypes[k] else v.to(dtypes[k])
             for k, v in state.items()}
    with torch.no_grad():
        model.load_state_dict(state, strict=True, assign=True)
        if keep_shared:  # the pre-hook recomputes it on every forward; refresh the cached one
            for m in shared_modules(model).values():
                m.weight = dense_weight(m.codebook, m.weight_indices, m.weight_mask)
    model.eval()
    model.sqz_header = sqz.header
    return model


__all__ = [
    "DEFAULT_GAP_BITS", "FORMAT", "MAGIC", "READ_VERSIONS", "VERSION", "SharedTensor", "SqzFile",
    "SqzFormatError", "load_compressed", "read_sqz", "round_stored_floats_", "save_compressed",
]
