"""Shared fixtures for the .sqz tests: a tiny pruned + weight-shared model, a header editor,
and the writer as it wrote version 5 (the file format's older ANS streams)."""
import contextlib
import copy
import json
import struct
import zlib

import torch

from squeezelab import create_model
from squeezelab.compress.format.layout import STREAM_KEYS, VERSION, _offsets_from_lengths
from squeezelab.compress.quantization.weight_sharing import (
    WeightSharingConfig,
    share_weights_,
)

TINY = dict(fire_config=[(4, 8, 8)] * 8, stem_channels=8)


def tiny_shared_model(seed: int = 0, sparsity: float = 0.7, unshared: tuple[str, ...] = ()):
    """A 3.7k-parameter CIFAR SqueezeNet, magnitude-pruned to ``sparsity`` and 4-bit shared
    except the weights named in ``unshared`` (left pruned: a file stores them sparse)."""
    torch.manual_seed(seed)
    model = create_model("squeezenet_cifar", **TINY)
    with torch.no_grad():
        for _name, p in model.named_parameters():
            if p.dim() > 1:
                k = int(p.numel() * sparsity)
                if k:
                    threshold = p.abs().flatten().kthvalue(k).values
                    p[p.abs() <= threshold] = 0
        for m in model.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    share_weights_(model, WeightSharingConfig(bits={"conv": 4, **dict.fromkeys(unshared)},
                                              max_iter=10))
    return model.eval()


def context_shared_model(seed: int = 0, unshared: tuple[str, ...] = (), sparsity: float = 0.6,
                         kernel_signs: bool = False):
    """A 10 KB-file CIFAR SqueezeNet whose filters' scales span 16x (as trained filters' do),
    pruned to ``sparsity`` and 4-bit shared: large enough that its last expand3x3 (32 filters)
    codes its indices in several ANS contexts. ``kernel_signs``: each 3x3 kernel of one sign
    (neighbouring taps of trained filters tend to share theirs: the adaptive coder's
    contexts)."""
    torch.manual_seed(seed)
    model = create_model("squeezenet_cifar", fire_config=[(4, 8, 8)] * 7 + [(16, 32, 32)],
                         stem_channels=8)
    with torch.no_grad():
        for p in model.parameters():
            if kernel_signs and p.dim() == 4 and p.shape[-1] == 3:
                p.copy_(torch.sign(torch.randn(*p.shape[:2], 1, 1)) * p.abs())
            if p.dim() > 1:
                p.mul_(torch.logspace(-2, 2, p.shape[0], base=2).view(-1, *[1] * (p.dim() - 1)))
                threshold = p.abs().flatten().kthvalue(int(p.numel() * sparsity)).values
                p[p.abs() <= threshold] = 0
    share_weights_(model, WeightSharingConfig(bits={"conv": 4, **dict.fromkeys(unshared)},
                                              max_iter=10))
    return model.eval()


def split(data: bytes):
    """(header, payload) of a file; the header's stream references as ``[offset, length]``
    whatever the version (version 4 stores lengths only), as tests edit them."""
    version, header_len = struct.unpack_from("<HI", data, 4)
    raw = data[10:10 + header_len]
    header = json.loads(zlib.decompress(raw) if version >= 2 else raw)
    payload = data[10 + header_len:-4]
    if version >= 4:
        _offsets_from_lengths(header, len(payload), "test")
    return header, payload


def join(header, payload: bytes, version: int = VERSION) -> bytes:
    """A file with a recomputed header length and a valid CRC32 (version 1: plain JSON
    header; 2 and up: zlib-compressed; 4 and up: each ``[offset, length]`` stream reference
    stored as its length, whatever its offset said)."""
    if version >= 4:
        header = copy.deepcopy(header)
        tensors = header["tensors"] if isinstance(header.get("tensors"), list) else []
        for entry in (e for e in tensors if isinstance(e, dict)):
            encoding = entry.get("encoding")
            for key in STREAM_KEYS.get(encoding, ()) if isinstance(encoding, str) else ():
                ref = entry.get(key)
                if isinstance(ref, list) and len(ref) == 2:
                    entry[key] = ref[1]
    h = json.dumps(header).encode()
    if version >= 2:
        h = zlib.compress(h)
    body = h + payload
    return b"SQZ\x00" + struct.pack("<HI", version, len(h)) + body + struct.pack(
        "<I", zlib.crc32(body))


def edit_header(data: bytes, fn, version: int = VERSION) -> bytes:
    header, payload = split(data)
    fn(header)
    return join(header, payload, version=version)


@contextlib.contextmanager
def writing_version_5():
    """``save_compressed`` as squeezelab wrote format version 5: ANS streams by constriction's
    AnsCoder (32-bit words), the streams of versions 3-5. For the tests that old files still
    load, and that edit a file's header as an older version's."""
    from squeezelab.compress.coding import ans
    from squeezelab.compress.format import sqz, streams

    saved = streams.rans_encode, streams.rans_encode_segments, sqz.VERSION
    streams.rans_encode, streams.rans_encode_segments = ans.ans_encode, ans.ans_encode_segments
    sqz.VERSION = 5
    try:
        yield
    finally:
        streams.rans_encode, streams.rans_encode_segments, sqz.VERSION = saved
