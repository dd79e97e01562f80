"""Where a .sqz file's weight bytes go, and what other models of the same symbols would cost.

    python benchmarks/sqz_entropy.py MODEL.sqz [-o benchmarks/results/sqz_entropy_NAME.json]

For the weight-shared layers of MODEL.sqz: the bytes its index and position streams take now,
and the empirical entropy (in bytes, with the side information a coder would have to store) of

* the cluster indices under one static model per layer (what the rANS coder reaches), and
  conditioned on: the filter's scale (4 quantile buckets of the filter's mean |weight|, known
  before decoding: 2 bits a filter), the sign or the whole index of the previous kept weight
  in the same filter (scan order: a sequential context), the previous index's magnitude class;
* the positions as a significance map: one static probability per layer, conditioned on the
  previous position of the filter, on per-filter counts (enumerative), on row and column
  density buckets.

An entropy is a bound a coder of that model can approach, not a coder: it says which context
is worth building one for. Conditional tables are counted at 6 bits an entry.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from squeezelab.compress.format.sqz import read_sqz  # noqa: E402

TABLE_BITS = 6


def entropy_bits(counts: np.ndarray) -> float:
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    return float(-(c * np.log2(c / c.sum())).sum()) if c.size else 0.0


def conditional_bits(symbols: np.ndarray, contexts: np.ndarray, alphabet: int) -> float:
    """Entropy of ``symbols`` within each context, summed, plus a table per used context."""
    total = 0.0
    for value in np.unique(contexts):
        total += entropy_bits(np.bincount(symbols[contexts == value], minlength=alphabet))
        total += alphabet * TABLE_BITS
    return total


def previous_in_row(values: np.ndarray, keep: np.ndarray, fill: int) -> np.ndarray:
    """Per kept entry of each row, the previous kept entry's value (``fill`` at a row start)."""
    out = np.full(values.shape, fill, dtype=np.int64)
    for r in range(values.shape[0]):
        cols = np.flatnonzero(keep[r])
        out[r, cols[1:]] = values[r, cols[:-1]]
    return out


def binary_bits(p: float, n: int) -> float:
    return 0.0 if p in (0.0, 1.0) else n * -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def layer_report(shared) -> dict[str, float]:
    codebook = shared.codebook.numpy()
    k = codebook.size
    out_channels = shared.shape[0]
    fan_in = int(np.prod(shared.shape[1:]))
    mask = shared.mask.numpy().reshape(out_channels, fan_in)
    index = shared.indices.numpy().astype(np.int64).reshape(out_channels, fan_in)
    kept = index[mask]
    rows = np.repeat(np.arange(out_channels), mask.sum(1))
    rep: dict[str, float] = {"weights": mask.size, "kept": int(mask.sum())}
    # cluster indices
    rep["index_static"] = entropy_bits(np.bincount(kept, minlength=k)) + k * TABLE_BITS
    scale = np.array([np.abs(codebook[index[r, mask[r]]]).mean() if mask[r].any() else 0.0
                      for r in range(out_channels)])
    bucket = np.searchsorted(np.quantile(scale, [0.25, 0.5, 0.75]), scale)
    rep["index_given_filter_scale"] = (conditional_bits(kept, bucket[rows], k)
                                       + 2 * out_channels)
    previous = previous_in_row(index, mask, -1)[mask]
    start = previous < 0
    sign = np.where(start, 2, (codebook[np.maximum(previous, 0)] > 0).astype(np.int64))
    rep["index_given_previous_sign"] = conditional_bits(kept, sign, k)
    rep["index_given_previous_index"] = conditional_bits(kept, np.where(start, k, previous), k)
    magnitude_rank = np.argsort(np.argsort(np.abs(codebook)))
    mag_class = np.minimum(magnitude_rank * 4 // k, 3)
    rep["index_given_previous_magnitude"] = conditional_bits(
        kept, np.where(start, 4, mag_class[np.maximum(previous, 0)]), k)
    rep["index_given_filter_scale_and_previous_sign"] = (
        conditional_bits(kept, bucket[rows] * 3 + sign, k) + 2 * out_channels)
    # positions (significance map)
    p = float(mask.mean())
    rep["positions_static"] = binary_bits(p, mask.size)
    sig = mask.astype(np.int64)
    before = np.concatenate([np.zeros((out_channels, 1), np.int64), sig[:, :-1]], axis=1)
    rep["positions_given_previous"] = conditional_bits(sig.ravel(), before.ravel(), 2)
    counts = mask.sum(1)
    rep["positions_given_row_counts"] = sum(
        (math.lgamma(fan_in + 1) - math.lgamma(c + 1) - math.lgamma(fan_in - c + 1))
        / math.log(2) for c in counts) + out_channels * math.log2(fan_in + 1)
    return {key: (value / 8 if key not in ("weights", "kept") else value)
            for key, value in rep.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sqz")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    sqz = read_sqz(args.sqz)
    layers, totals = {}, {}
    now = {"index": 0, "positions": 0}
    for entry in sqz.entries:
        if entry["encoding"] != "shared":
            continue
        rep = layer_report(sqz.shared[entry["name"]])
        now["index"] += entry["index"][1] + entry["index_table"][1]
        now["positions"] += entry["gap"][1] + entry["gap_table"][1]
        layers[entry["name"]] = rep
        for key, value in rep.items():
            totals[key] = totals.get(key, 0) + value
    dense = sum(e["data"][1] for e in sqz.entries if e["encoding"] != "shared")
    print(f"{args.sqz}: {sqz.file_size:,} bytes; dense tensors {dense:,}; index streams now "
          f"{now['index']:,}, position streams now {now['positions']:,}")
    for key, value in totals.items():
        if key not in ("weights", "kept"):
            print(f"  {key:<44} {value:>10,.0f} bytes")
    write_result("sqz_entropy", {"sqz": args.sqz, "file_bytes": sqz.file_size,
                                 "dense_bytes": dense, "streams_now_bytes": now,
                                 "totals_bytes": totals, "layers": layers}, args.output)


if __name__ == "__main__":
    main()
