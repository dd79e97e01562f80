"""Version-7 "adaptive" entries of the .sqz file (coding/adaptive.py through streams.py): exact
round trips of shared and sparse layers, fewer bytes where a layer's kernels have signs that
follow their neighbours (as trained 3x3 filters do), "smallest" never above either coder,
version checks, and lying or damaged adaptive entries refused with the layer named."""
import pytest
import torch
from sqz_helpers import context_shared_model, edit_header, join, split

from squeezelab.compress.format.sqz import (
    SqzFormatError,
    load_compressed,
    read_sqz,
    save_compressed,
)

BIG = "features.13.expand3x3.weight"  # the 32-filter expand3x3 of the model below


@pytest.fixture(scope="module")
def smooth_model():
    """Each 3x3 kernel of one sign (what the neighbour contexts predict), 40% pruned."""
    return context_shared_model(sparsity=0.4, kernel_signs=True)


@pytest.fixture(scope="module")
def files(smooth_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adaptive")
    return {c: save_compressed(smooth_model, tmp / f"{c}.sqz", coder=c).read_bytes()
            for c in ("ans", "auto", "adaptive", "smallest")}


def _entry(header, name=BIG):
    return next(t for t in header["tensors"] if t["name"] == name)


def _stream_bytes(entry):
    return sum(entry[k][1] for k in ("index_table", "index", "gap_table", "gap"))


def test_adaptive_file_round_trips_exactly(smooth_model, files):
    data = files["adaptive"]
    sqz = read_sqz(data)
    assert sqz.version == 7
    shared = [e for e in sqz.header["tensors"] if e["encoding"] == "shared"]
    assert shared and all(e["coder"] == "adaptive" and e["gap_table"][1] == 0 for e in shared)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_compressed(data)(x), smooth_model(x))
    a, b = sqz.state_dict(), read_sqz(files["ans"]).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_neighbour_contexts_code_sign_following_kernels_smaller(files):
    """The large 3x3 layer: adaptive index stream (with its groups) well under the static
    one with its tables; the whole file smaller; "smallest" no larger than either."""
    adaptive, ans = split(files["adaptive"])[0], split(files["ans"])[0]
    big_a, big_s = _entry(adaptive), _entry(ans)
    assert (big_a["index"][1] + big_a["index_table"][1]
            < 0.9 * (big_s["index"][1] + big_s["index_table"][1]))
    sizes = {c: len(d) for c, d in files.items()}
    assert sizes["adaptive"] < sizes["auto"]
    assert sizes["smallest"] <= min(sizes["adaptive"], sizes["auto"])
    smallest = split(files["smallest"])[0]
    by = {c: {e["name"]: e for e in split(files[c])[0]["tensors"]} for c in files}
    for e in (e for e in smallest["tensors"] if e["encoding"] == "shared"):
        assert _stream_bytes(e) == min(_stream_bytes(by["auto"][e["name"]]),
                                       _stream_bytes(by["adaptive"][e["name"]]))


def test_a_sparse_layer_codes_its_gaps_adaptively(tmp_path):
    model = context_shared_model(unshared=("features.0.weight",))
    data = save_compressed(model, tmp_path / "s.sqz", coder="adaptive").read_bytes()
    entry = _entry(split(data)[0], "features.0.weight")
    assert entry["encoding"] == "sparse" and entry["coder"] == "adaptive"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_compressed(data)(x), model(x))


def test_version_6_files_load_and_may_not_hold_adaptive_entries(files):
    header, payload = split(files["ans"])
    v6 = join(header, payload, version=6)
    a, b = read_sqz(v6).state_dict(), read_sqz(files["ans"]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    header, payload = split(files["adaptive"])
    with pytest.raises(SqzFormatError, match=r"layer '[^']+': the adaptive coder came with "
                                             r"format version 7; this file is version 6"):
        read_sqz(join(header, payload, version=6))


def test_an_alphabet_too_large_for_the_adaptive_coder_is_a_clear_error():
    import numpy as np

    from squeezelab.compress.format.streams import encode_streams

    kept, gaps = np.zeros(3, dtype=np.int64), np.array([1, 5000, 2])
    with pytest.raises(ValueError, match="adaptive coder codes alphabets of up to 4096 "
                                         "symbols, this layer has 5001"):
        encode_streams(kept, 1, gaps, 5001, "adaptive", 256)
    # "smallest" falls back to the static coders for such a layer
    assert encode_streams(kept, 1, gaps, 5001, "smallest", 256).coder in ("huffman", "ans")


def _move_bytes(entry, into: str, out_of: str, n: int) -> None:
    """Lengthen stream ``into`` by ``n`` bytes taken from the next one, ``out_of`` (the
    lengths still add up to the payload: the lie reaches the entry's own checks)."""
    entry[into] = [entry[into][0], entry[into][1] + n]
    entry[out_of] = [entry[out_of][0] + n, entry[out_of][1] - n]


@pytest.mark.parametrize("edit, message", [
    (lambda h: _move_bytes(_entry(h), "gap_table", "gap", 2),
     r"gap_table has 2 bytes, \d+ adaptive table entries need 0"),
    (lambda h: _move_bytes(_entry(h), "index_table", "index", 1),
     r"index_table has \d+ bytes; an adaptive entry's \d+ group\(s\) need whole 16-bit words"),
    (lambda h: _entry(h).pop("index_contexts"),
     r"index_table has \d+ bytes; an adaptive entry's 1 group\(s\) need none"),
    (lambda h: _entry(h).__setitem__("index_symbols", 5000),
     r"'index_symbols' must be an int in \[0, 16\], got 5000"),
    (lambda h: _entry(h).__setitem__("gap_symbols", 0),  # found by the fuzz test
     rf"layer '{BIG}': gap stream of \d+ entries: an adaptive stream codes 1 to 4096 "
     r"symbols, got 0"),
    (lambda h: _entry(h).__setitem__("symbols_crc32", _entry(h)["symbols_crc32"] ^ 1),
     rf"layer '{BIG}': the decoded symbols do not match their CRC32"),
])
def test_lying_adaptive_headers_with_valid_crc(files, edit, message):
    assert _entry(split(files["adaptive"])[0]).get("index_contexts", 1) > 1
    with pytest.raises(SqzFormatError, match=message):
        read_sqz(edit_header(files["adaptive"], edit))


def test_an_adaptive_model_larger_than_the_bound_is_refused_before_decoding(files):
    """16 groups of 4,096 symbols would be a 590,000-count model: refused from the header,
    as a SqzFormatError (never the coder's ValueError)."""
    header, payload = split(files["adaptive"])
    entry = _entry(header)
    entry.update(weight_bits=12, index_symbols=4096, index_contexts=16)
    cb_off, cb_len = entry["codebook"]
    grow = 4 * 4096 - cb_len  # a float32 codebook of 4,096 entries in the payload
    payload = payload[:cb_off + cb_len] + b"\0" * grow + payload[cb_off + cb_len:]
    entry["codebook"] = [cb_off, cb_len + grow]  # (a version-7 header keeps lengths only)
    header["payload_size"] = len(payload)
    with pytest.raises(SqzFormatError, match=rf"layer '{BIG}': 16 group\(s\) of 4096 symbols "
                                             r"need an adaptive model of 589824 counts"):
        read_sqz(join(header, payload))


def test_damaged_adaptive_streams_name_the_layer(files):
    header, payload = split(files["adaptive"])
    entry = _entry(header)
    for key, what in (("index", "index stream|the decoded symbols"),
                      ("index_table", "the groups of its 32 filters|the decoded symbols"),
                      ("gap", "gap stream|the decoded symbols")):
        off, length = entry[key]
        for damage in (b"\x00" * length, b"\x5a" * length,
                       bytes(reversed(payload[off:off + length]))):
            damaged = bytearray(payload)
            damaged[off:off + length] = damage
            with pytest.raises(SqzFormatError, match=rf"layer '{BIG}': .*({what})"):
                read_sqz(join(header, bytes(damaged)))
