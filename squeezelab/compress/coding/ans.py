"""Entropy coding with asymmetric numeral systems (rANS, Duda 2013, arXiv 1311.2540): the
models of the .sqz file's ANS streams (length tables), and the coder of its version 3-5 streams.
Version 6 codes the same models with our own rANS (``rans.py``), decoded by table lookup.

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

from collections.abc import Sequence

import numpy as np

from squeezelab.compress.coding.sparse_index import pack_bits

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


def uniform_table(num_symbols: int) -> np.ndarray:
    """The length table of a uniform distribution over ``range(num_symbols)`` (a model the
    decoder knows without a table in the file)."""
    return np.ones(num_symbols, dtype=np.uint8)


def pack_table(codes: np.ndarray) -> bytes:
    return pack_bits(np.asarray(codes, dtype=np.int64), TABLE_BITS)


def unpack_table(data: bytes, num_symbols: int) -> np.ndarray:
    """A length table from its packed bytes (exactly ``table_bytes(num_symbols)`` of them)."""
    return unpack_tables(data, num_symbols, 1)[0]


_BIT_VALUES = (1 << np.arange(TABLE_BITS - 1, -1, -1)).astype(np.uint8)  # a code's bits, MSB first


def unpack_tables(data: bytes, num_symbols: int, count: int) -> np.ndarray:
    """``count`` length tables packed one after another (``table_bytes(num_symbols)`` bytes
    each, as a layer's index contexts store them): rows of a ``[count, num_symbols]`` uint8
    array. One numpy pass for all of them: a file has a table per stream and context, and
    unpacking them one at a time took a tenth of decoding the indices of a file whose layers
    use contexts."""
    one = table_bytes(num_symbols)
    if len(data) != count * one:
        what = "a table" if count == 1 else f"{count} tables"
        raise AnsError(f"{what} of {num_symbols} symbols {'has' if count == 1 else 'have'} "
                       f"{count * one} bytes, got {len(data)}")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).reshape(count, 8 * one)
    bits = bits[:, :num_symbols * TABLE_BITS].reshape(count, num_symbols, TABLE_BITS)
    codes = (bits * _BIT_VALUES).sum(axis=2, dtype=np.uint8)  # MSB first, as pack_bits packs
    if num_symbols and not codes.any(axis=1).all():
        raise AnsError("the length table has no symbol")
    return codes


def table_bytes(num_symbols: int) -> int:
    return (num_symbols * TABLE_BITS + 7) // 8


def ans_encode(symbols: np.ndarray, codes: np.ndarray) -> bytes:
    """``symbols`` (each present in ``codes``) as an rANS stream of little-endian 32-bit words;
    empty for no symbols."""
    return ans_encode_segments([(symbols, codes)])


def coded_segments(segments: Sequence[tuple[np.ndarray, np.ndarray]], dtype=np.int32,
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The non-empty ``(symbols, codes)`` segments of a stream to code, symbols as ``dtype``;
    ValueError if a symbol has no code in its table (both ANS coders check this)."""
    out = []
    for symbols, codes in segments:
        symbols = np.ascontiguousarray(symbols, dtype=dtype)
        if symbols.size == 0:
            continue
        codes = np.asarray(codes)
        if symbols.min() < 0 or symbols.max() >= codes.size or not codes[symbols].all():
            raise ValueError("every symbol must have a nonzero code in the length table")
        out.append((symbols, codes))
    return out


def ans_encode_segments(segments: Sequence[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """One rANS stream of several segments, each ``(symbols, codes)``: its symbols under its own
    length table (a context's model). ``ans_decode_segments`` reads them back in this order.
    Empty for no symbols at all."""
    coder = None
    # rANS is a stack: the last segment pushed is the first popped, so push them in reverse
    for symbols, codes in reversed(coded_segments(segments)):
        if coder is None:
            coder = _constriction().stream.stack.AnsCoder()
        coder.encode_reverse(symbols, _model(codes))
    return b"" if coder is None else coder.get_compressed().astype("<u4").tobytes()


def ans_decode(data: bytes, codes: np.ndarray, count: int) -> np.ndarray:
    """``count`` symbols (int32, each < ``len(codes)``) from an ``ans_encode`` stream.

    ``AnsError`` when the stream does not decode to exactly its end (too small a count, damaged
    words). A damaged stream can still decode "cleanly" to wrong symbols, an absent one among
    them (the model gives absent symbols a sliver of probability): check the symbols against
    a checksum, as the .sqz reader does; checking each one here would cost a pass over them.
    """
    return ans_decode_segments(data, [(codes, count)])[0]


def ans_decode_segments(data: bytes, segments: Sequence[tuple[np.ndarray, int]],
                        ) -> list[np.ndarray]:
    """The segments of an ``ans_encode_segments`` stream, each given as ``(codes, count)``:
    ``count`` symbols (int32) under that length table; ``AnsError`` as ``ans_decode``."""
    reader = AnsReader(data, sum(count for _, count in segments))
    out = [reader.read(codes, count) for codes, count in segments]
    reader.close()
    return out


class AnsReader:
    """Reads an ``ans_encode_segments`` stream one segment at a time, for a decoder whose next
    segment's table or count depends on the symbols before it. ``close()`` checks that the
    stream ended exactly there; ``total`` (the symbols the caller expects in all, where known)
    only sharpens error messages and the empty-stream check."""

    def __init__(self, data: bytes, total: int | None = None) -> None:
        self.total = total
        if total == 0 and data:
            raise AnsError(f"{len(data)} bytes for no symbols")
        if len(data) % 4:  # (a stream of certain symbols may be empty)
            raise AnsError(f"an ANS stream is whole 32-bit words, got {len(data)} bytes")
        words = np.frombuffer(data, dtype="<u4")
        if words.dtype != np.uint32:  # a big-endian machine
            words = words.astype(np.uint32)
        self._words = words
        self._coder = None

    def read(self, codes: np.ndarray, count: int) -> np.ndarray:
        """The next ``count`` symbols (int32), under the length table ``codes``."""
        if count == 0:
            return np.zeros(0, dtype=np.int32)
        try:
            if self._coder is None:
                self._coder = _constriction().stream.stack.AnsCoder(self._words)
            return np.asarray(self._coder.decode(_model(codes), count), dtype=np.int32)
        except ValueError as e:  # e.g. "never ends in a zero word"
            raise AnsError(f"not an ANS stream: {e}") from None

    def read_many(self, tables: Sequence[np.ndarray], counts: Sequence[int],
                  ) -> list[np.ndarray]:
        """The next segments in turn, ``counts[g]`` symbols under ``tables[g]``."""
        return [self.read(codes, count) for codes, count in zip(tables, counts)]

    def close(self) -> None:
        if self._coder is None:
            if self._words.size:
                raise AnsError(f"{self._words.size * 4} bytes for no symbols")
            return
        if not self._coder.is_empty():
            held = "" if self.total is None else f" {self.total}"
            raise AnsError(f"the stream holds more than{held} symbols (damaged, or a wrong "
                           "count)")


__all__ = ["AnsError", "AnsReader", "ans_decode", "ans_decode_segments", "ans_encode",
           "ans_encode_segments", "coded_segments", "length_table", "pack_table", "table_bytes",
           "uniform_table", "unpack_table", "unpack_tables"]
