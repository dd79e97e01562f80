"""Relative-index coding of sparse weights and fixed-width bit packing (Deep Compression,
Han et al., arXiv 1510.00149, section 2: "we store the index difference instead of the absolute
position ... 8 bits for conv layers and 5 bits for fc layers ... when we need an index
difference larger than the bound, we add a filler zero").

The positions of the kept weights of a flattened tensor are stored as *gaps* in ``gap_bits``
bits. A real entry stores its distance ``g`` from the previous entry (the first from position
-1), ``1 <= g <= max_gap`` with ``max_gap = 2**gap_bits - 1``. The value 0 marks a *filler*
entry: a zero weight ``max_gap`` positions after the previous entry. Where the paper marks a
filler by a zero weight (a padding cluster index), we mark it in the gap itself: a filler then
costs one gap symbol and no index symbol, and the gap stream decodes positions on its own.
Fillers are also added after the last kept weight until fewer than ``max_gap`` positions
remain, so a stream of ``n`` entries describes at most ``(n + 1) * max_gap`` weights: a reader
can bound a tensor's size by its stream before allocating anything.
"""
from __future__ import annotations

import numpy as np

from squeezelab.compress.coding import jit


def _check_bits(num_bits: int, name: str = "num_bits", low: int = 1, high: int = 16) -> None:
    if isinstance(num_bits, bool) or not isinstance(num_bits, (int, np.integer)) or not (
        low <= num_bits <= high
    ):
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {num_bits!r}")


def max_gap(gap_bits: int) -> int:
    """Largest gap a real entry can store in ``gap_bits`` bits (value 0 is the filler)."""
    _check_bits(gap_bits, "gap_bits")
    return (1 << gap_bits) - 1


def encode_positions(mask_flat: np.ndarray, gap_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Gap stream of the True positions of a flat boolean mask.

    Returns ``(gaps, is_filler)``: ``gaps`` (uint16) holds values in ``[0, 2**gap_bits)``, one
    per entry, with 0 for a filler; ``is_filler`` (bool) marks the fillers
    (``is_filler.sum()`` is the filler count).
    """
    mask_flat = np.asarray(mask_flat)
    if mask_flat.ndim != 1:
        raise ValueError(f"mask_flat must be 1-D, got shape {mask_flat.shape}")
    if mask_flat.dtype != np.bool_:
        raise ValueError(f"mask_flat must be boolean, got dtype {mask_flat.dtype}")
    m = max_gap(gap_bits)
    positions = np.flatnonzero(mask_flat)
    total = mask_flat.shape[0]
    # Distance of each kept weight from the previous one; a virtual end point at `total`
    # lets the same arithmetic add the trailing fillers.
    dist = np.diff(np.concatenate(([-1], positions, [total])))
    # d - 1 = q * max_gap + rest: q fillers, then a real gap of rest + 1 in [1, max_gap]. For
    # the tail (d - 1 pruned weights after the last kept one) the q fillers leave < max_gap.
    fillers = (dist - 1) // m
    num_entries = int(fillers.sum()) + positions.size
    gaps = np.zeros(num_entries, dtype=np.uint16)
    # Each kept weight comes after its own fillers: its entry index is a running sum.
    real_idx = np.cumsum(fillers[:-1] + 1) - 1
    gaps[real_idx] = (dist[:-1] - fillers[:-1] * m).astype(np.uint16)
    return gaps, gaps == 0


def decode_positions(gaps: np.ndarray, gap_bits: int, total: int) -> np.ndarray:
    """Positions (int64, increasing) of the kept weights from a gap stream of a flat tensor of
    ``total`` weights. Raises ValueError if the stream does not describe such a tensor."""
    gaps = np.asarray(gaps)
    m = max_gap(gap_bits)
    if gaps.ndim != 1:
        raise ValueError(f"gaps must be 1-D, got shape {gaps.shape}")
    if not isinstance(total, (int, np.integer)) or total < 0:
        raise ValueError(f"total must be a non-negative int, got {total!r}")
    kernel = jit.compiled(positions_kernel)
    if kernel is not None and np.issubdtype(gaps.dtype, np.integer):
        positions = np.empty(gaps.size, dtype=np.int64)
        kept, last = kernel(gaps, m, positions)
        if kept < 0:
            raise ValueError(f"gap values must be in [0, {m}] for gap_bits={gap_bits}")
        positions = positions[:kept]
    else:  # the same in numpy passes (about 5x slower on a squeezenet1_0-sized file)
        if gaps.size and (int(gaps.min()) < 0 or int(gaps.max()) > m):
            raise ValueError(f"gap values must be in [0, {m}] for gap_bits={gap_bits}")
        entry_pos = np.cumsum(np.where(gaps == 0, m, gaps.astype(np.int64))) - 1
        last = int(entry_pos[-1]) if entry_pos.size else -1
        positions = entry_pos[gaps != 0]
    if last >= total:
        raise ValueError(f"gap stream reaches position {last}, past the {total} weights")
    if total - last - 1 >= m:
        raise ValueError(
            f"gap stream ends at position {last} but {total} weights need trailing fillers "
            f"(at most {m - 1} weights may follow the last entry)"
        )
    return positions


def positions_kernel(gaps, m, out):  # pragma: no cover - numba compiles it
    """One pass of ``decode_positions``: fills ``out`` with the positions; returns (how many,
    the last entry's position), or (-1, index) at the first gap outside ``[0, m]``. The write
    and count are unconditional (a filler's is overwritten by the next entry): no branch."""
    pos = -1
    kept = 0
    for i in range(gaps.size):
        g = np.int64(gaps[i])  # of any integer dtype; one type for the arithmetic
        if g < 0 or g > m:
            return -1, i
        pos += m if g == 0 else g
        out[kept] = pos
        kept += g != 0
    return kept, pos


def expand(total: int, positions: np.ndarray, symbols: np.ndarray, table: np.ndarray,
           ) -> np.ndarray:
    """A flat array of ``total`` entries: ``table[symbols]`` at ``positions``, 0 elsewhere (the
    dense weight of a shared layer, ``table`` its codebook), of ``table``'s dtype. One pass
    in numba (no gathered copy: 4x faster than numpy's ``out[positions] = table[symbols]``);
    numpy without it. Positions and symbols are the decoder's, already checked."""
    out = np.zeros(total, dtype=table.dtype)
    kernel = jit.compiled(_expand_kernel)
    if kernel is None:
        out[positions] = table[symbols]
    else:
        kernel(out, positions, table, symbols)
    return out


def _expand_kernel(out, positions, table, symbols):  # pragma: no cover - numba compiles it
    for i in range(positions.size):
        out[positions[i]] = table[symbols[i]]


def max_total(num_entries: int, gap_bits: int) -> int:
    """Largest tensor a gap stream of ``num_entries`` entries can describe (for size checks)."""
    return (num_entries + 1) * max_gap(gap_bits) - 1


def pack_bits(values: np.ndarray, num_bits: int) -> bytes:
    """Pack non-negative integers below ``2**num_bits`` (1..16) MSB-first, zero-padded."""
    _check_bits(num_bits)
    values = np.asarray(values).reshape(-1)
    if values.size == 0:
        return b""
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"values must be integers, got dtype {values.dtype}")
    v = values.astype(np.int64)
    if int(v.min()) < 0 or int(v.max()) >= (1 << num_bits):
        raise ValueError(
            f"values must be in [0, {1 << num_bits}) for num_bits={num_bits}, got range "
            f"[{int(v.min())}, {int(v.max())}]"
        )
    # (n,) -> (n, num_bits) bit matrix, MSB first, then numpy packs 8 bits a byte.
    shifts = np.arange(num_bits - 1, -1, -1, dtype=np.int64)
    bits = ((v[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1)).tobytes()


def unpack_bits(data: bytes, num_bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack_bits``: ``count`` integers (int64) of ``num_bits`` bits each."""
    _check_bits(num_bits)
    if not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    need = (count * num_bits + 7) // 8
    if len(data) < need:
        raise ValueError(f"{count} values of {num_bits} bits need {need} bytes, got {len(data)}")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=need))
    bits = bits[: count * num_bits].reshape(count, num_bits).astype(np.int64)
    shifts = np.arange(num_bits - 1, -1, -1, dtype=np.int64)
    return (bits << shifts).sum(axis=1)


__all__ = [
    "decode_positions", "encode_positions", "expand", "max_gap", "max_total", "pack_bits",
    "positions_kernel", "unpack_bits",
]
