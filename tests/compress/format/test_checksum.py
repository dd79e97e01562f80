"""The .sqz CRC-32 (compress/format/checksum.py): zlib's checksum exactly, on every kind of
buffer the format hands it, and computed by zlib-ng (a dependency), not a silent fallback."""
import zlib

import numpy as np

from squeezelab.compress.format import checksum


def test_it_is_zlibs_crc32_on_bytes_views_arrays_and_chained():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=100_003, dtype=np.uint8).tobytes()
    symbols = rng.integers(0, 64, size=50_001).astype("<i4")
    assert checksum.crc32(b"") == zlib.crc32(b"") == 0
    assert checksum.crc32(data) == zlib.crc32(data)
    assert checksum.crc32(memoryview(data)[7:-5]) == zlib.crc32(memoryview(data)[7:-5])
    assert checksum.crc32(symbols) == zlib.crc32(symbols)
    # chained, as an ANS layer's symbols_crc32 covers its index then its gap symbols
    first = checksum.crc32(symbols[:1000])
    assert checksum.crc32(symbols[1000:], first) == zlib.crc32(symbols)


def test_the_fast_implementation_is_the_one_in_use():
    assert checksum.crc32.__module__ == "zlib_ng.zlib_ng"
