"""Tests for the .sqz file: exact round trips of a pruned, weight-shared model, the size report,
and a clear SqzFormatError for every kind of damaged or lying file."""
import json
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from sqz_helpers import (
    TINY,
    context_shared_model,
    edit_header,
    join,
    split,
)

from squeezelab import create_model
from squeezelab.compress.coding.sparse_index import pack_bits
from squeezelab.compress.format.size_report import format_size_report, size_report
from squeezelab.compress.format.sqz import (
    VERSION,
    SqzFormatError,
    load_compressed,
    read_sqz,
    round_stored_floats_,
    save_compressed,
)
from squeezelab.compress.quantization.weight_sharing import shared_modules


def _load(data: bytes):
    return load_compressed(data)


def test_round_trip_outputs_exactly_equal(shared_model, sqz_bytes, tmp_path):
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = shared_model(x)
    path = tmp_path / "m.sqz"
    path.write_bytes(sqz_bytes)
    loaded = load_compressed(path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    kept = load_compressed(path, keep_shared=True)
    assert set(shared_modules(kept)) == set(shared_modules(shared_model))
    with torch.no_grad():
        assert torch.equal(kept(x), expected)
    assert loaded.sqz_header["class_names"] == [f"c{i}" for i in range(10)]
    assert loaded.sqz_header["meta"] == {"top1": 0.5, "recipe": "test"}


def test_read_sqz_gives_back_codebook_indices_and_mask(shared_model, sqz_bytes):
    sqz = read_sqz(sqz_bytes)
    shared = shared_modules(shared_model)
    assert set(sqz.shared) == set(shared)
    for name, module in shared.items():
        t = sqz.shared[name]
        assert torch.equal(t.codebook, module.codebook.detach())
        assert torch.equal(t.mask, module.weight_mask)
        assert torch.equal(t.indices, module.weight_indices)
        assert t.gap_bits == 3 and t.weight_bits == 4
    assert sqz.model == {"name": "squeezenet_cifar",
                         "kwargs": {"num_classes": 10, "fire_config": [[4, 8, 8]] * 8,
                                    "stem_channels": 8}}
    dense = sqz.dense["features.1.num_batches_tracked"]
    assert dense.dtype == torch.int64


def test_unshared_model_round_trips_dense(tmp_path):
    model = create_model("squeezenet_cifar", **TINY).eval()
    path = save_compressed(model, tmp_path / "dense.sqz")
    loaded = load_compressed(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_size_report_adds_up_to_the_file(sqz_bytes, tmp_path, shared_model):
    path = tmp_path / "r.sqz"
    path.write_bytes(sqz_bytes)
    report = size_report(path, fp32=shared_model)
    t = report.totals
    assert t["file_bytes"] == os.path.getsize(path)
    assert t["tensor_bytes"] + t["header_bytes"] + t["container_bytes"] == t["file_bytes"]
    assert t["unaccounted_bytes"] == 0
    fresh = create_model("squeezenet_cifar", **TINY).state_dict()
    assert t["num_params"] == sum(v.numel() for v in fresh.values())
    row = next(r for r in report if r["name"] == "features.0.weight")
    mask = shared_modules(shared_model)["features.0.weight"].weight_mask
    assert row["sparsity"] == pytest.approx(1 - mask.float().mean().item())
    assert row["index_bits"] == 4 and row["gap_bits"] == 3 and row["num_clusters"] == 16
    assert row["codebook_bytes"] == 64
    assert row["index_bits_huffman"] == pytest.approx(8 * row["index_bytes"] / int(mask.sum()))
    assert t["safetensors_bytes"] > t["file_bytes"] and t["gzip_bytes"] > 0
    text = format_size_report(report)
    assert "features.0.weight" in text and f"{t['file_bytes']:,} B" in text
    # each coded layer names its coder (the fixture file: auto, so Huffman or rANS)
    entries = {e["name"]: e for e in read_sqz(sqz_bytes).entries}
    for r in report:
        coded = r["encoding"] in ("shared", "sparse")
        assert r["coder"] == (entries[r["name"]].get("coder", "huffman") if coded else None)
    assert {r["coder"] for r in report} - {None} <= {"huffman", "ans"}
    line = next(x for x in text.splitlines() if x.startswith("features.0.weight"))
    assert line.split()[3] == row["coder"]


# ---------------------------------------------------------------- failure modes
def test_truncated_files(sqz_bytes):
    for cut in (0, 3, 9, 10, 50, len(sqz_bytes) // 2, len(sqz_bytes) - 5, len(sqz_bytes) - 1):
        with pytest.raises(SqzFormatError, match="too short|truncated|CRC32 mismatch"):
            _load(sqz_bytes[:cut])


def test_bad_magic_version_and_crc(sqz_bytes):
    with pytest.raises(SqzFormatError, match="not a .sqz file"):
        _load(b"PK\x03\x04" + sqz_bytes[4:])
    header, payload = split(sqz_bytes)
    with pytest.raises(SqzFormatError, match="format version 8; this squeezelab reads "
                                             "versions 1, 2, 3, 4, 5, 6, 7"):
        _load(join(header, payload, version=8))
    flipped = bytearray(sqz_bytes)
    flipped[len(flipped) // 2] ^= 0x10
    with pytest.raises(SqzFormatError, match="CRC32 mismatch"):
        _load(bytes(flipped))


@pytest.mark.parametrize("float_dtype, itemsize", [("float16", 2), ("bfloat16", 2)])
def test_half_precision_floats_halve_their_bytes_and_load_as_rounded(
        shared_model, sqz_bytes, tmp_path, float_dtype, itemsize):
    """float_dtype stores dense floats and codebooks in 2 bytes; the loaded model computes
    exactly what round_stored_floats_ makes of the in-memory one (the pipeline scores that)."""
    import copy

    path = save_compressed(shared_model, tmp_path / "h.sqz", float_dtype=float_dtype,
                           gap_bits=3, class_names=[f"c{i}" for i in range(10)],
                           meta={"top1": 0.5, "recipe": "test"})
    header = read_sqz(path).header
    state = shared_model.state_dict()
    dense_floats = [e for e in header["tensors"]
                    if e["encoding"] == "dense" and state[e["name"]].is_floating_point()]
    shared = [e for e in header["tensors"] if e["encoding"] == "shared"]
    assert dense_floats and shared
    assert all(e["dtype"] == float_dtype and e["data"][1] == itemsize * state[e["name"]].numel()
               for e in dense_floats)
    assert all(e["codebook_dtype"] == float_dtype and e["codebook"][1] == itemsize * 16
               for e in shared)
    saved = (sum(2 * state[e["name"]].numel() for e in dense_floats) + len(shared) * 16 * 2)
    # the payload shrinks by exactly the halved floats (the header may differ by a few bytes)
    assert read_sqz(sqz_bytes).header["payload_size"] - header["payload_size"] == saved
    rounded = copy.deepcopy(shared_model)
    keys = round_stored_floats_(rounded, float_dtype)
    assert set(keys) == {e["name"] for e in dense_floats} | {
        e["name"][: -len("weight")] + "codebook" for e in shared}
    x = torch.randn(4, 3, 32, 32)
    loaded = load_compressed(path)
    with torch.no_grad():
        assert torch.equal(loaded(x), rounded.eval()(x))
        assert not torch.equal(loaded(x), shared_model(x))  # it did round something
    for k, v in loaded.state_dict().items():  # the model keeps its own (fp32) dtypes
        assert v.dtype == state[k].dtype if k in state else True
    assert round_stored_floats_(copy.deepcopy(shared_model), "float32") == []
    with pytest.raises(ValueError, match=r"float_dtype must be one of \('float32', 'float16', "
                                         r"'bfloat16'\), got 'int8'"):
        save_compressed(shared_model, tmp_path / "bad.sqz", float_dtype="int8")


def test_a_version_6_stream_must_be_whole_16_bit_words(ans_bytes):
    header, payload = split(ans_bytes)
    e = _ans_entry(header)
    (off, length), (t_off, t_len) = e["index"], e["gap_table"]
    e["index"], e["gap_table"] = [off, length - 1], [t_off - 1, t_len + 1]  # lengths add up
    with pytest.raises(SqzFormatError, match=rf"index stream of {length - 1} bytes is not whole "
                                             r"16-bit ANS words"):
        _load(join(header, payload))


def test_ans_coded_file_round_trips_exactly_and_auto_picks_the_smaller_coder(
        shared_model, ans_bytes, tmp_path):
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_compressed(ans_bytes)(x), shared_model(x))
    header = read_sqz(ans_bytes).header
    shared = [e for e in header["tensors"] if e["encoding"] == "shared"]
    assert all(e["coder"] == "ans" and isinstance(e["symbols_crc32"], int) for e in shared)
    huffman = read_sqz(save_compressed(shared_model, tmp_path / "h.sqz", gap_bits=3,
                                       coder="huffman")).header
    auto = read_sqz(save_compressed(shared_model, tmp_path / "a.sqz", gap_bits=3)).header
    assert not any("coder" in e for e in huffman["tensors"])  # Huffman entries are version 2's

    def stream_bytes(entry):
        return sum(entry[k][1] for k in ("index_table", "index", "gap_table", "gap"))

    by_name = {e["name"]: e for e in huffman["tensors"]}
    for a, e in zip(shared, (e for e in auto["tensors"] if e["encoding"] == "shared")):
        assert stream_bytes(e) == min(stream_bytes(a), stream_bytes(by_name[a["name"]]))
        assert e.get("coder", "huffman") == (
            "ans" if stream_bytes(a) < stream_bytes(by_name[a["name"]]) else "huffman")
    with pytest.raises(ValueError, match=r"coder must be one of \('auto', 'smallest', "
                                         r"'huffman', 'ans', 'adaptive'\)"):
        save_compressed(shared_model, tmp_path / "x.sqz", coder="zip")


def test_a_larger_layer_codes_smaller_with_ans_than_huffman(tmp_path):
    """On a layer of realistic size the ANS streams beat the Huffman ones (fractional bits)."""
    torch.manual_seed(0)
    model = create_model("squeezenet_cifar")
    from squeezelab.compress.pruning.magnitude import PruneConfig, prune_
    from squeezelab.compress.quantization.weight_sharing import (
        WeightSharingConfig,
        share_weights_,
    )

    prune_(model, PruneConfig(sparsity=0.7, rules={"features.[!1]*": 0.0, "classifier*": 0.0}))
    share_weights_(model, WeightSharingConfig(bits={"conv": 4}, max_iter=5))
    sizes = {c: save_compressed(model, tmp_path / f"{c}.sqz", coder=c).stat().st_size
             for c in ("huffman", "ans", "auto")}
    assert sizes["auto"] <= sizes["ans"] < sizes["huffman"]
    auto = read_sqz(tmp_path / "auto.sqz")
    assert "ans" in {e.get("coder") for e in auto.entries}  # the large layers
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_compressed(tmp_path / "auto.sqz")(x), model.eval()(x))


def _ans_entry(h, name="features.4.expand3x3.weight"):
    return next(t for t in h["tensors"] if t["name"] == name)


@pytest.mark.parametrize("edit, message", [
    (lambda h: _ans_entry(h).__setitem__("coder", "zip"),
     r"coder must be one of \('huffman', 'ans', 'adaptive'\), got 'zip'"),
    (lambda h: _ans_entry(h).__setitem__("symbols_crc32", _ans_entry(h)["symbols_crc32"] ^ 1),
     r"layer 'features.4.expand3x3.weight': the decoded symbols do not match their CRC32"),
    (lambda h: _ans_entry(h).pop("symbols_crc32"), r"'symbols_crc32' must be an int"),
    (lambda h: _ans_entry(h).update(nnz=_ans_entry(h)["nnz"] - 1,
                                    num_fillers=_ans_entry(h)["num_fillers"] + 1),
     r"layer 'features.4.expand3x3.weight': gap stream gives \d+ kept weights, index "
     r"stream \d+"),
    (lambda h: _ans_entry(h).__setitem__("index", [_ans_entry(h)["index"][0], 6]),
     r"index stream of 6 bytes is not whole 32-bit ANS words"),
    (lambda h: _ans_entry(h).__setitem__("gap_table", [_ans_entry(h)["gap_table"][0], 1]),
     r"gap_table has 1 bytes, \d+ ans table entries need"),
    (lambda h: _ans_entry(h).__setitem__("nnz", 10**6),
     r"'nnz' must be an int in \[0, 288\], got 1000000"),
])
def test_lying_ans_headers_with_valid_crc(ans_v5_bytes, edit, message):
    # written as version 3 (stream offsets explicit): a later file reaches the same checks
    # once its lengths are offsets, and most lies there already break the lengths' sum
    with pytest.raises(SqzFormatError, match=message):
        _load(edit_header(ans_v5_bytes, edit, version=3))


def _damaged_index_stream_names_the_layer(data: bytes, pick_entry) -> None:
    """Zeroed, constant and reversed index-stream bytes behind a valid CRC: each is refused
    with an error naming the layer (a stream decoded cleanly to wrong symbols meets the CRC)."""
    header, payload = split(data)
    entry = pick_entry(header)
    off, length = entry["index"]
    for damage in (b"\x00" * length, b"\x5a" * length, bytes(reversed(payload[off:off + length]))):
        damaged = bytearray(payload)
        damaged[off:off + length] = damage
        with pytest.raises(SqzFormatError, match=rf"layer '{entry['name']}': "
                                                 r"(index stream|the decoded symbols)"):
            _load(join(header, bytes(damaged)))


def test_damaged_ans_stream_names_the_layer(ans_bytes):
    _damaged_index_stream_names_the_layer(ans_bytes, _ans_entry)


def test_threads_decode_layers_and_report_the_first_damaged_one_in_file_order(ans_bytes):
    """ANS layers decode ``torch.get_num_threads()`` at a time, largest first: the result, and
    with two layers damaged the error (naming the earlier layer of the file), do not depend
    on how many threads decoded them."""
    header, payload = split(ans_bytes)
    ans = [e for e in header["tensors"] if e.get("coder") == "ans"]
    first, later = ans[1], max(ans[2:], key=lambda e: e["nnz"])
    assert later["nnz"] > first["nnz"]  # decoded first, being larger
    damaged = bytearray(payload)
    for entry in (first, later):
        off, length = entry["index"]
        damaged[off:off + length] = b"\x00" * length
    bad = join(header, bytes(damaged))
    threads = torch.get_num_threads()
    try:
        outcomes = []
        for n in (1, 2):
            torch.set_num_threads(n)
            with pytest.raises(SqzFormatError) as e:
                _load(bad)
            outcomes.append((str(e.value), read_sqz(ans_bytes).state_dict()))
    finally:
        torch.set_num_threads(threads)
    (error1, state1), (error2, state2) = outcomes
    assert error1 == error2 and f"layer '{first['name']}'" in error1
    assert state1.keys() == state2.keys() and all(torch.equal(state1[k], state2[k]) for k in state1)


def test_compressed_header_that_is_not_zlib_or_expands_too_far(sqz_bytes):
    payload = split(sqz_bytes)[1]
    for raw, match in ((b"not zlib at all", "header is not valid zlib data"),
                       (zlib.compress(b" " * (1 << 22), 9), "does not decompress within")):
        body = raw + payload
        bad = (b"SQZ\x00" + struct.pack("<HI", 2, len(raw)) + body
               + struct.pack("<I", zlib.crc32(body)))
        with pytest.raises(SqzFormatError, match=match):
            _load(bad)


def test_header_not_json_or_wrong_types(sqz_bytes):
    body = b"{not json" + split(sqz_bytes)[1]
    bad = b"SQZ\x00" + struct.pack("<HI", 1, 9) + body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(SqzFormatError, match="header is not valid UTF-8 JSON"):
        _load(bad)
    with pytest.raises(SqzFormatError, match="'tensors' must be a list"):
        _load(edit_header(sqz_bytes, lambda h: h.update(tensors={"a": 1})))
    with pytest.raises(SqzFormatError, match="header 'model' must be"):
        _load(edit_header(sqz_bytes, lambda h: h.update(model="squeezenet")))


def _shared_entry(h, name="features.4.expand3x3.weight"):
    return next(t for t in h["tensors"] if t["name"] == name)


def _dense_entry(h, name="features.1.running_var"):
    return next(t for t in h["tensors"] if t["name"] == name)


@pytest.mark.parametrize("edit, message", [
    (lambda h: _dense_entry(h)["data"].__setitem__(0, 10**9),
     r"layer 'features.1.running_var': data stream \[1000000000, .*\) lies outside"),
    (lambda h: _dense_entry(h)["data"].__setitem__(1, 4),
     r"layer 'features.1.running_var': 4 bytes of data, but shape \[8\] in float32 needs 32"),
    (lambda h: _dense_entry(h).__setitem__("shape", [4]),
     r"layer 'features.1.running_var': 32 bytes of data, but shape \[4\]"),
    (lambda h: _dense_entry(h).__setitem__("shape", [2**40]),
     r"more than a \d+-byte file can hold"),
    (lambda h: _shared_entry(h).__setitem__("shape", [8, 4, 3, 4]),
     r"layer 'features.4.expand3x3.weight': file shape \[8, 4, 3, 4\] does not fit "
     r"the model's \[8, 4, 3, 3\]|gap stream"),
    (lambda h: _shared_entry(h).__setitem__("shape", [10**6]),
     r"layer 'features.4.expand3x3.weight': shape \[1000000\] has 1000000 weights, but \d+ "
     r"entries of 3-bit gaps describe at most"),
    (lambda h: _shared_entry(h).update(nnz=_shared_entry(h)["nnz"] + 1,
                                       num_entries=_shared_entry(h)["num_entries"] + 1),
     r"layer 'features.4.expand3x3.weight': (index|gap) stream of \d+ entries: "),
    (lambda h: _shared_entry(h).__setitem__("index_symbols", 17),
     r"'index_symbols' must be an int in \[0, 16\], got 17"),
    (lambda h: _shared_entry(h).__setitem__("codebook", [0, 8]),
     r"codebook has 8 bytes, a 4-bit float32 codebook needs 64"),
    (lambda h: _shared_entry(h).__setitem__("codebook_dtype", "float16"),
     r"codebook has 64 bytes, a 4-bit float16 codebook needs 32"),
    (lambda h: _shared_entry(h).__setitem__("codebook_dtype", "int8"),
     r"codebook_dtype must be one of \('float32', 'float16', 'bfloat16'\), got 'int8'"),
    (lambda h: _shared_entry(h).__setitem__("index", [_shared_entry(h)["index"][0], 1]),
     r"layer 'features.4.expand3x3.weight': (index stream|'nnz')"),
    (lambda h: _shared_entry(h).__setitem__("gap", _shared_entry(h)["index"]),
     r"layer 'features.4.expand3x3.weight': (gap stream|'num_entries')"),
    (lambda h: _shared_entry(h).__setitem__("weight_bits", "4"),
     r"'weight_bits' must be an int in \[1, 16\], got '4'"),
    (lambda h: _shared_entry(h).__setitem__("encoding", "zip"),
     r"unknown encoding 'zip'"),
    (lambda h: h["model"].__setitem__("name", "squeezenet_cifra"),
     r"model 'squeezenet_cifra' .* cannot be built: UnknownModelError: unknown model "
     r"'squeezenet_cifra'; did you mean squeezenet_cifar"),
    (lambda h: h["model"]["kwargs"].__setitem__("num_classes", 11),
     r"layer 'classifier.1.weight': file shape \[10, 16, 1, 1\] does not fit the model's "
     r"\[11, 16, 1, 1\]"),
    (lambda h: h["model"]["kwargs"].__setitem__("num_fire", 10**7),
     r"model argument 10000000 is beyond \+-1048576"),
    (lambda h: h["model"].update(kwargs={"num_fire": 5000}),
     r"has far more tensors than the \d+ the file holds"),
    (lambda h: h["model"]["kwargs"].__setitem__("batch_norm", False),
     r"tensors do not fit the model: missing \['features.0.bias', .*unexpected "
     r"\['features.1.bias'"),
    (lambda h: h["tensors"].pop(),
     r"tensors do not fit the model: missing \['classifier.1.\w+'\], unexpected \[\]"),
    (lambda h: h.update(payload_size=5), r"header says the payload has 5 bytes"),
])
def test_lying_headers_with_valid_crc(sqz_bytes, edit, message):
    # version 3, as test_lying_ans_headers_with_valid_crc
    with pytest.raises(SqzFormatError, match=message):
        _load(edit_header(sqz_bytes, edit, version=3))


def test_version_4_stream_lengths_must_be_lengths_that_add_up(sqz_bytes):
    """Since version 4 a file stores lengths only; the reader turns them into offsets and
    refuses lengths that are not ints or do not add up to the payload. Lengths that add up but
    are swapped still meet the per-stream checks."""
    header, payload = split(sqz_bytes)
    assert sqz_bytes[4:6] == struct.pack("<H", VERSION)
    raw = json.loads(zlib.decompress(sqz_bytes[10:10 + struct.unpack_from("<I", sqz_bytes, 6)[0]]))
    i, first = next((i, e) for i, e in enumerate(raw["tensors"]) if e["encoding"] == "dense")
    assert isinstance(first["data"], int)  # a length, not [offset, length]

    def with_lengths(fn):
        h = json.loads(json.dumps(raw))
        fn(h)
        body = zlib.compress(json.dumps(h).encode()) + payload
        return (b"SQZ\x00" + struct.pack("<HI", VERSION, len(body) - len(payload)) + body
                + struct.pack("<I", zlib.crc32(body)))

    with pytest.raises(SqzFormatError, match=rf"tensor {i} \('{first['name']}'\): 'data' must "
                                             r"be a byte length \(a non-negative int\), got \["):
        _load(with_lengths(lambda h: h["tensors"][i].update(data=[0, first["data"]])))
    with pytest.raises(SqzFormatError, match=r"streams add up to \d+ bytes, the payload holds"):
        _load(with_lengths(lambda h: h["tensors"][i].update(data=first["data"] + 4)))

    def swap(h):
        e = _shared_entry(h)
        e["index_table"], e["index"] = e["index"], e["index_table"]

    with pytest.raises(SqzFormatError, match=r"layer 'features.4.expand3x3.weight': index_table "
                                             r"has \d+ bytes"):
        _load(with_lengths(swap))


def test_corrupt_streams_name_the_layer(sqz_bytes):
    header, payload = split(sqz_bytes)
    entry = _shared_entry(header)
    off, length = entry["index"]
    damaged = bytearray(payload)
    damaged[off:off + length] = b"\xff" * length  # all-ones: longer than any code sequence
    with pytest.raises(SqzFormatError, match=r"layer 'features.4.expand3x3.weight': index "
                                             r"stream of \d+ entries"):
        _load(join(header, bytes(damaged)))
    t_off, t_len = entry["gap_table"]
    damaged = bytearray(payload)
    # every code length 1: not a prefix code
    damaged[t_off:t_off + t_len] = pack_bits(np.ones(entry["gap_symbols"], np.int64), 5)
    with pytest.raises(SqzFormatError, match=r"layer 'features.4.expand3x3.weight': gap table: "
                                             r".*(not a prefix code|must be in)"):
        _load(join(header, bytes(damaged)))


def test_missing_file(tmp_path):
    with pytest.raises(SqzFormatError, match="cannot read"):
        load_compressed(tmp_path / "nope.sqz")


def test_atomic_write_leaves_no_temp_files(shared_model, tmp_path):
    save_compressed(shared_model, tmp_path / "a.sqz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.sqz"]
    assert np.frombuffer((tmp_path / "a.sqz").read_bytes()[:4], np.uint8).tobytes() == b"SQZ\0"


def _context_entry(h):
    return next(t for t in h["tensors"] if t.get("index_contexts", 1) > 1)


def test_index_contexts_round_trip_exactly_and_code_smaller_than_one_table(context_bytes):
    """Filters of very different scales: the ANS coder groups them (version 4), the file
    loads bit-exactly, and the grouped indices cost fewer bytes than one table would."""
    from squeezelab.compress.coding.ans import ans_encode, length_table, table_bytes

    model = context_shared_model()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_compressed(context_bytes)(x), model(x))
    sqz = read_sqz(context_bytes)
    entry = _context_entry(sqz.header)
    contexts = entry["index_contexts"]
    assert 2 <= contexts <= entry["shape"][0]
    assert entry["index_table"][1] == contexts * table_bytes(entry["index_symbols"])
    kept = sqz.shared[entry["name"]].symbols
    one_table = len(ans_encode(kept, length_table(kept, entry["index_symbols"])))
    assert entry["index"][1] + entry["index_table"][1] < one_table + table_bytes(
        entry["index_symbols"])


@pytest.mark.parametrize("edit, message", [
    (lambda h: _context_entry(h).__setitem__("index_contexts", 1),
     r"'index_contexts' must be an int in \[2, 16\], got 1"),
    (lambda h: _context_entry(h).__setitem__("index_contexts", 17),
     r"'index_contexts' must be an int in \[2, 16\], got 17"),
    (lambda h: _context_entry(h).__setitem__("coder", "huffman"),
     r"index contexts need an ANS coder, not 'huffman'"),
    (lambda h: _context_entry(h).__setitem__("index_contexts",
                                             _context_entry(h)["index_contexts"] + 1),
     r"index_table has \d+ bytes, \d+ tables of 16 ans table entries need"),
])
def test_lying_index_contexts(context_v5_bytes, edit, message):
    with pytest.raises(SqzFormatError, match=message):
        _load(edit_header(context_v5_bytes, edit, version=3))


def test_damaged_context_stream_names_the_layer(context_bytes):
    _damaged_index_stream_names_the_layer(context_bytes, _context_entry)


def test_dense_floats_as_uniform_levels(shared_model, tmp_path):
    """dense_bits stores every dense float tensor as bit-packed levels (float32 low and step
    first); integer tensors stay raw; the loaded model computes what round_stored_floats_
    makes of the in-memory one, and each level is within half a step of the true value."""
    import copy

    from squeezelab.compress.quantization.uniform_levels import quantize, round_to_levels

    path = save_compressed(shared_model, tmp_path / "u.sqz", dense_bits=6)
    sqz = read_sqz(path)
    state = shared_model.state_dict()
    uniform = [e for e in sqz.entries if e["encoding"] == "uniform"]
    # levels where 8 bytes + 6 bits a value beat 4 bytes a value: above one value
    assert uniform and {e["name"] for e in uniform} == {
        e["name"] for e in sqz.entries if e["encoding"] != "shared"
        and state[e["name"]].is_floating_point() and state[e["name"]].numel() > 2}
    for e in uniform:
        n = state[e["name"]].numel()
        assert e["bits"] == 6 and e["data"][1] == 8 + (n * 6 + 7) // 8
        true = state[e["name"]].numpy()
        _, step, _ = quantize(true, 6)
        assert np.abs(sqz.dense[e["name"]].numpy() - true).max() <= step / 2 + 1e-6
    assert all(sqz.dense[e["name"]].dtype == state[e["name"]].dtype for e in sqz.entries
               if e["encoding"] == "dense")  # num_batches_tracked: raw int64
    rounded = copy.deepcopy(shared_model)
    keys = round_stored_floats_(rounded, "float32", dense_bits=6)
    assert set(keys) == {e["name"] for e in uniform}  # float32 codebooks are not rounded
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_compressed(path)(x), rounded.eval()(x))
    # a constant tensor is one level; 16 bits are near float32; bad bits are refused
    assert np.array_equal(round_to_levels(np.full(5, 0.3, np.float32), 4), np.full(5, 0.3,
                                                                                   np.float32))
    v = np.random.default_rng(0).normal(size=100).astype(np.float32)
    assert np.abs(round_to_levels(v, 16) - v).max() < 1e-3
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 16\], got 0"):
        save_compressed(shared_model, tmp_path / "bad.sqz", dense_bits=0)
    with pytest.raises(ValueError, match="non-finite"):
        quantize(np.array([1.0, np.inf]), 8)


@pytest.mark.parametrize("edit, message", [
    (lambda h: _uniform_entry(h).__setitem__("bits", 17),
     r"'bits' must be an int in \[1, 16\], got 17"),
    (lambda h: _uniform_entry(h).__setitem__("bits", 7),
     r"\d+ bytes of data, but \d+ 7-bit levels need \d+"),
    (lambda h: _uniform_entry(h).__setitem__("dtype", "float16"),
     r"a uniform tensor loads as float32, got 'float16'"),
])
def test_lying_uniform_entries(shared_model, tmp_path, edit, message):
    data = save_compressed(shared_model, tmp_path / "u.sqz", dense_bits=8).read_bytes()
    with pytest.raises(SqzFormatError, match=message):
        _load(edit_header(data, edit, version=3))


def test_non_finite_uniform_step_is_refused(shared_model, tmp_path):
    data = save_compressed(shared_model, tmp_path / "u.sqz", dense_bits=8).read_bytes()
    header, payload = split(data)
    off = _uniform_entry(header)["data"][0]
    bad = bytearray(payload)
    bad[off + 4:off + 8] = struct.pack("<f", float("nan"))
    with pytest.raises(SqzFormatError, match="uniform levels with a non-finite"):
        _load(join(header, bytes(bad)))


def _uniform_entry(h):
    return next(t for t in h["tensors"] if t["encoding"] == "uniform")
