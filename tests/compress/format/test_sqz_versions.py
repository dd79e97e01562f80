"""Files of older .sqz versions still load, to the same model: version 1's plain JSON header,
version 2's float32 codebooks without a coder field, version 3's explicit stream offsets, and
version 5's ANS streams (constriction's, which version 6 replaced with our own rANS)."""
import torch
from sqz_helpers import join, split

from squeezelab.compress.format.sqz import load_compressed, read_sqz, save_compressed


def test_version_1_plain_json_header_still_loads(sqz_bytes):
    header, payload = split(sqz_bytes)
    v1 = join(header, payload, version=1)
    assert v1[4:6] == b"\x01\x00" and len(v1) > len(sqz_bytes)  # the plain header is larger
    a, b = read_sqz(v1).state_dict(), read_sqz(sqz_bytes).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_version_5_file_still_loads_exactly_and_version_6_codes_as_small(
        shared_model, ans_bytes, ans_v5_bytes):
    """Version 6 replaced constriction's streams with our own rANS; files of version 5 (and 3-4,
    which share its streams) still load, to the same model, and the new streams cost at most a
    few bytes more (two coder states instead of one) for the same tables."""
    old, new = read_sqz(ans_v5_bytes), read_sqz(ans_bytes)
    assert (old.version, new.version) == (5, 7)  # 7 writes the ANS streams of 6
    a, b = old.state_dict(), new.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_compressed(ans_v5_bytes)(x), shared_model(x))
    streams = [e for e in new.header["tensors"] if e["encoding"] == "shared"]
    assert len(ans_bytes) <= len(ans_v5_bytes) + 4 * 2 * len(streams)


def test_version_2_file_with_float32_codebooks_still_loads(shared_model, tmp_path):
    """A version-2 file is a version-3 file without codebook_dtype and coder (float32
    codebooks, Huffman streams)."""
    sqz_bytes = save_compressed(shared_model, tmp_path / "v2.sqz", coder="huffman").read_bytes()
    header, payload = split(sqz_bytes)
    assert not any("codebook_dtype" in e or "coder" in e for e in header["tensors"])
    v2 = join(header, payload, version=2)
    a, b = read_sqz(v2).state_dict(), read_sqz(sqz_bytes).state_dict()
    assert read_sqz(v2).version == 2
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_version_5_file_with_index_contexts_still_loads(context_bytes, context_v5_bytes):
    a, b = read_sqz(context_v5_bytes).state_dict(), read_sqz(context_bytes).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_version_3_file_with_stream_offsets_still_loads(ans_bytes, ans_v5_bytes):
    """A version-3 file states each stream as [offset, length] (its ANS streams are version
    5's); it reads as before."""
    header, payload = split(ans_v5_bytes)
    v3 = join(header, payload, version=3)
    assert v3[4:6] == b"\x03\x00" and read_sqz(v3).version == 3
    a, b = read_sqz(v3).state_dict(), read_sqz(ans_bytes).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
