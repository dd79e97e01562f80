"""Entropy coding with asymmetric numeral systems (rANS, Duda 2013, arXiv 1311.2540), the
coder of the .sqz file's version-3 streams.

Huffman coding spends a whole number of bits on every symbol; an arithmetic or ANS coder spends
-log2 p, so it reaches the stream's entropy (measured on a pruned, 4-bit SqueezeNet: 2.4% fewer
index bytes and 2.5% fewer gap bytes than the Huffman streams). The coder itself is
``constriction``'s ``AnsCoder`` (Rust; decodes at tens of nanoseconds a symbol, several times
faster than our vectorised Huffman decoder); this module owns the model the file stores.

The model of a stream is one static distribution over its symbols, stored as a *length table*:
per symbol a 6-bit code q, 0 for "absent", else -log2 p rounded to a quarter bit
(p proportional to 2 ** (-(q - 1) / 4)). That costs 6 bits a symbol, against the Huffman
table's 5, and loses under 0.1% against exact probabilities (quarter-bit rounding). Symbols
rarer than 2 ** -15.5 are coded as if that common.

Encoder and decoder build the same ``Categorical`` model from the same table, so the coded
stream depends on constriction's model quantisation; ``decode`` checks that the stream is
consumed exactly, and the .sqz reader adds a checksum of the decoded symbols, so a stream
decoded by another quantisation is refused rather than misread.
"""
from __future__ import annotations

import numpy as np

from squeezelab.compress.coding.sparse_index import pack_bits, unpack_bits

TABLE_BITS = 6  # bits per symbol in a length table
STEPS_PER_BIT = 4  # lengths in quarter bits
_MAX_CODE = (1 << TABLE_BITS) - 1


class AnsError(ValueError):
    """A length table or ANS stream that cannot be decoded."""


def _constriction():
    try:
        import constriction
    except ImportError as e:  # a declared dependency: only a broken install gets here
        raise ImportError("ANS coding needs the constriction package: pip install "
                          "constriction") from e
    return constriction


def length_table(symbols: np.ndarray, num_symbols: int) -> np.ndarray:
    """The quarter-bit length codes (uint8, 0 = absent) of ``symbols``' empirical distribution
    over ``range(num_symbols)``."""
    symbols = np.asarray(symbols)
    counts = np.bincount(symbols.astype(np.int64), minlength=num_symbols)
    if counts.size > num_symbols:
        raise ValueError(f"symbol {int(symbols.max())} is outside range({num_symbols})")
    codes = np.zeros(num_symbols, dtype=np.uint8)
    present = counts > 0
    if present.any():
        lengths = -np.log2(counts[present] / counts.sum())
        codes[present] = np.clip(np.rint(lengths * STEPS_PER_BIT) + 1, 1, _MAX_CODE)
    return codes


def _probabilities(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.int64)
    p = np.where(codes > 0, np.exp2(-(codes - 1) / STEPS_PER_BIT), 0.0)
    total = p.sum()
    if total <= 0:
        raise AnsError("the length table has no symbol")
    return p / total


def _model(codes: np.ndarray):
    p = _probabilities(codes)
    if p.size == 1:  # constriction's Categorical needs two entries; the second is never coded
        p = np.append(p, 0.0)
    return _constriction().stream.model.Categorical(p, perfect=False)


def pack_table(codes: np.ndarray) -> bytes:
    return pack_bits(np.asarray(codes, dtype=np.int64), TABLE_BITS)


def unpack_table(data: bytes, num_symbols: int) -> np.ndarray:
    """A length table from its packed bytes (exactly ``table_bytes(num_symbols)`` of them)."""
    if len(data) != table_bytes(num_symbols):
        raise AnsError(f"a table of {num_symbols} symbols has {table_bytes(num_symbols)} "
                       f"bytes, got {len(data)}")
    codes = unpack_bits(data, TABLE_BITS, num_symbols).astype(np.uint8)
    if num_symbols and not codes.any():
        raise AnsError("the length table has no symbol")
    return codes


def table_bytes(num_symbols: int) -> int:
    return (num_symbols * TABLE_BITS + 7) // 8


def ans_encode(symbols: np.ndarray, codes: np.ndarray) -> bytes:
    """``symbols`` (each present in ``codes``) as an rANS stream of little-endian 32-bit words;
    empty for no symbols."""
    symbols = np.ascontiguousarray(symbols, dtype=np.int32)
    if symbols.size == 0:
        return b""
    codes = np.asarray(codes)
    if symbols.min() < 0 or symbols.max() >= codes.size or not codes[symbols].all():
        raise ValueError("every symbol must have a nonzero code in the length table")
    coder = _constriction().stream.stack.AnsCoder()
    coder.encode_reverse(symbols, _model(codes))
    return coder.get_compressed().astype("<u4").tobytes()


def ans_decode(data: bytes, codes: np.ndarray, count: int) -> np.ndarray:
    """``count`` symbols (int32, each < ``len(codes)``) from an ``ans_encode`` stream.

    ``AnsError`` when the stream does not decode to exactly its end (too small a count, damaged
    words). A damaged stream can still decode "cleanly" to wrong symbols, an absent one among
    them (the model gives absent symbols a sliver of probability): check the symbols against
    a checksum, as the .sqz reader does; checking each one here would cost a pass over them.
    """
    if count == 0:
        if data:
            raise AnsError(f"{len(data)} bytes for no symbols")
        return np.zeros(0, dtype=np.int32)
    if len(data) % 4:  # (a stream of certain symbols may be empty)
        raise AnsError(f"an ANS stream is whole 32-bit words, got {len(data)} bytes")
    words = np.frombuffer(data, dtype="<u4")
    if words.dtype != np.uint32:  # a big-endian machine
        words = words.astype(np.uint32)
    try:
        coder = _constriction().stream.stack.AnsCoder(words)
        symbols = coder.decode(_model(codes), count)
    except ValueError as e:  # e.g. "never ends in a zero word"
        raise AnsError(f"not an ANS stream: {e}") from None
    if not coder.is_empty():
        raise AnsError(f"the stream holds more than {count} symbols (damaged, or a wrong count)")
    return np.asarray(symbols, dtype=np.int32)


__all__ = ["AnsError", "ans_decode", "ans_encode", "length_table", "pack_table", "table_bytes",
           "unpack_table"]
