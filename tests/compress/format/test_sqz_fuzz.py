"""Fuzz test of the .sqz reader: thousands of random mutations of a small valid file (bit flips,
truncations, insertions, payload damage and header edits behind a recomputed CRC) must each
either load or raise SqzFormatError -- never another exception, a hang or a huge allocation."""
import functools
import time

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqz_helpers import context_shared_model, edit_header, join, split, tiny_shared_model

from squeezelab.compress.format.sqz import (
    SqzFormatError,
    load_compressed,
    save_compressed,
)

_FIELDS = ["name", "shape", "dtype", "encoding", "data", "weight_bits", "gap_bits", "nnz",
           "num_entries", "num_fillers", "codebook", "index_symbols", "index_table", "index",
           "gap_symbols", "gap_table", "gap", "coder", "symbols_crc32", "codebook_dtype",
           "index_contexts", "bits", "values"]
_TOP_FIELDS = ["format", "model", "class_names", "meta", "huffman_lane_symbols",
               "payload_size", "tensors"]

_values = st.one_of(
    st.integers(-3, 70),
    st.integers(-(2**63), 2**63),
    st.sampled_from([0, 1, 2**31 - 1, 2**32, 2**53, -1]),
    st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=5),
    st.lists(st.integers(-5, 2**33), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@functools.lru_cache(maxsize=3)
def _valid_file(coder: str = "huffman") -> bytes:
    """A small valid file (cached, not a fixture: hypothesis would print all its bytes)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.sqz"
        # 2-bit gaps and 16-symbol lanes: many fillers and many lanes in a small file; the ANS
        # file also stores its codebooks in float16, its biases and BatchNorm tensors as 8-bit
        # levels, and codes a layer's indices in contexts (every version-3 and version-4
        # field present); all leave the stem unshared, pruned: a sparse entry (version 5); the
        # adaptive file (version 7) is the ANS one with its streams learnt instead
        ans = coder != "huffman"
        stem = ("features.0.weight",)
        model = (context_shared_model(unshared=stem) if ans
                 else tiny_shared_model(seed=1, unshared=stem))
        save_compressed(model, path, gap_bits=2, lane_symbols=16, coder=coder,
                        float_dtype="float16" if ans else "float32",
                        dense_bits=8 if ans else None)
        return path.read_bytes()


def _mutate(data: bytes, draw, versions: tuple[int, ...] = (3, 4)) -> bytes:
    """``data`` damaged one way; a header rewritten as one of ``versions`` (3 states each
    stream's offset, 4 and later its length only)."""
    kind = draw(st.sampled_from(
        ["flip", "truncate", "insert", "delete", "payload", "header", "header", "kwargs"]))
    if kind == "flip":
        out = bytearray(data)
        for pos in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=4)):
            out[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if kind == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if kind == "insert":
        pos = draw(st.integers(0, len(data)))
        return data[:pos] + draw(st.binary(min_size=1, max_size=8)) + data[pos:]
    if kind == "delete":
        pos = draw(st.integers(0, len(data) - 1))
        return data[:pos] + data[pos + draw(st.integers(1, 8)):]
    header, payload = split(data)
    if kind == "payload":  # damage behind a valid CRC: only the decoder's checks remain
        out = bytearray(payload)
        for pos in draw(st.lists(st.integers(0, len(out) - 1), min_size=1, max_size=6)):
            out[pos] = draw(st.integers(0, 255))
        return join(header, bytes(out), version=draw(st.sampled_from(versions)))
    if kind == "kwargs":
        key = draw(st.sampled_from(["num_classes", "num_fire", "stem_channels", "fire_config",
                                    "batch_norm", "dropout", "pool_after", "activation"]))
        header["model"]["kwargs"][key] = draw(_values)
        return join(header, payload)
    if draw(st.booleans()):
        header[draw(st.sampled_from(_TOP_FIELDS))] = draw(_values)
    else:
        entry = header["tensors"][draw(st.integers(0, len(header["tensors"]) - 1))]
        field = draw(st.sampled_from(_FIELDS))
        if draw(st.booleans()) and isinstance(entry.get(field), (int, list)):
            # small lies are the hard ones: off by a little from the true value
            delta = draw(st.integers(-3, 3))
            value = entry[field]
            entry[field] = value + delta if isinstance(value, int) else [
                v + draw(st.integers(-3, 3)) if isinstance(v, int) else v for v in value]
        else:
            entry[field] = draw(_values)
    return join(header, payload, version=draw(st.sampled_from(versions)))


def test_valid_files_load():
    for coder in ("huffman", "ans", "adaptive"):
        assert isinstance(load_compressed(_valid_file(coder)), torch.nn.Module)
    shared = [e for e in split(_valid_file("ans"))[0]["tensors"] if e["encoding"] == "shared"]
    assert shared and all(e["coder"] == "ans" and e["codebook_dtype"] == "float16"
                          for e in shared)
    assert any(e.get("index_contexts", 1) > 1 for e in shared)
    assert any(e["encoding"] == "uniform" for e in split(_valid_file("ans"))[0]["tensors"])
    adaptive = split(_valid_file("adaptive"))[0]["tensors"]
    assert all(e["coder"] == "adaptive" for e in adaptive if e["encoding"] in ("shared", "sparse"))
    assert any(e.get("index_contexts", 1) > 1 for e in adaptive)
    for coder in ("huffman", "ans", "adaptive"):
        sparse = [e for e in split(_valid_file(coder))[0]["tensors"] if e["encoding"] == "sparse"]
        assert [e["name"] for e in sparse] == ["features.0.weight"]
        assert sparse[0].get("coder", "huffman") == coder


@settings(max_examples=2000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_files_load_or_raise_sqz_format_error(data):
    _check_mutation(_valid_file("huffman"), data)


@settings(max_examples=1000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_ans_files_load_or_raise_sqz_format_error(data):
    _check_mutation(_valid_file("ans"), data)


@settings(max_examples=600, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_adaptive_files_load_or_raise_sqz_format_error(data):
    _check_mutation(_valid_file("adaptive"), data, versions=(7,))


def _check_mutation(valid: bytes, data, versions: tuple[int, ...] = (3, 4)) -> None:
    mutated = _mutate(valid, data.draw, versions)
    start = time.perf_counter()
    try:
        model = load_compressed(mutated)
    except SqzFormatError as e:
        assert str(e)  # a message, never an empty error
    else:
        assert isinstance(model, torch.nn.Module)
    assert time.perf_counter() - start < 5.0


def test_header_edit_helper_round_trips():
    data = _valid_file()
    assert edit_header(data, lambda h: None) == join(*split(data))
