"""Shared fixtures for the .sqz tests: a tiny pruned + weight-shared model and a header editor."""
import json
import struct
import zlib

import torch

from squeezelab import create_model
from squeezelab.compress.format.layout import VERSION
from squeezelab.compress.quantization.weight_sharing import (
    WeightSharingConfig,
    share_weights_,
)

TINY = dict(fire_config=[(4, 8, 8)] * 8, stem_channels=8)


def tiny_shared_model(seed: int = 0, sparsity: float = 0.7):
    """A 3.7k-parameter CIFAR SqueezeNet, magnitude-pruned to ``sparsity`` and 4-bit shared."""
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
    share_weights_(model, WeightSharingConfig(bits={"conv": 4}, max_iter=10))
    return model.eval()


def split(data: bytes):
    version, header_len = struct.unpack_from("<HI", data, 4)
    raw = data[10:10 + header_len]
    header = json.loads(zlib.decompress(raw) if version >= 2 else raw)
    return header, data[10 + header_len:-4]


def join(header, payload: bytes, version: int = VERSION) -> bytes:
    """A file with a recomputed header length and a valid CRC32 (version 1: plain JSON
    header; 2 and up: zlib-compressed)."""
    h = json.dumps(header).encode()
    if version >= 2:
        h = zlib.compress(h)
    body = h + payload
    return b"SQZ\x00" + struct.pack("<HI", version, len(h)) + body + struct.pack(
        "<I", zlib.crc32(body))


def edit_header(data: bytes, fn) -> bytes:
    header, payload = split(data)
    fn(header)
    return join(header, payload)
