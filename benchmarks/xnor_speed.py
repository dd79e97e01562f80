"""XNOR-Net on packed bits vs fp32 and vs the float simulation, layer by layer.

The XNOR-Net paper (arXiv 1603.05279) estimates a 58x speed-up of binary convolutions: one XOR
and one popcount of a 64-bit word do the work of 64 multiply-accumulates. This measures it on
this CPU for a few SqueezeNet v1.1 layers (their shapes at a 224 input) and AlexNet's fc6
(9216 -> 4096), at batch 1 and 64:

* ``fp32``: ``nn.Conv2d`` / ``nn.Linear`` (oneDNN / MKL) on ``--threads`` threads, and on one;
* ``simulation``: ``BinaryConv2d`` / ``BinaryLinear`` with ``method="xnor_net"`` (the float
  simulation: +-1 stored as fp32, the K map and alpha), on ``--threads`` threads;
* ``packed``: ``PackedXnorConv2d`` / ``PackedXnorLinear``: the whole forward, with packing the
  input's signs (im2col for a conv), the K map and the scaling; the popcount runs in numpy on
  one thread;
* ``popcount_kernel``: ``xnor_popcount_dot`` alone on operands packed beforehand.

Beside each measured ratio: the word-op ratio, K / ceil(K/64) multiply-accumulates per
XOR+popcount (64 when K is a multiple of 64), and the paper's estimate 64 K / (K + 64) (its
S = 64 c N_W / (c N_W + 64), which charges one non-binary operation per output). The packed
outputs are checked equal to the simulation's. Weights are random and inputs ~ N(0, 1).

    python benchmarks/xnor_speed.py [--batches 1 64] [--repeats 30] [--large-repeats 5]
        [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timed_ms, write_result  # noqa: E402

from squeezelab.compress.quantization.binary import (  # noqa: E402
    BinaryConfig,
    BinaryConv2d,
    BinaryLinear,
)
from squeezelab.compress.quantization.xnor_bits import (  # noqa: E402
    WORD_BITS,
    PackedXnorConv2d,
    PackedXnorLinear,
    pack_sign_bits,
    sign_bits,
    words_for,
    xnor_popcount_dot,
)

LARGE_BATCH = 8  # batches above this get --large-repeats timed passes
#: (name, in, out, side of the input, kernel, padding): SqueezeNet v1.1 at 224, then fc6.
LAYERS: list[tuple[str, int, int, int, int, int]] = [
    ("squeezenet1_1 features.3.expand3x3", 16, 64, 55, 3, 1),
    ("squeezenet1_1 features.6.expand3x3", 32, 128, 27, 3, 1),
    ("squeezenet1_1 features.12.expand3x3", 64, 256, 13, 3, 1),
    ("squeezenet1_1 features.12.squeeze", 512, 64, 13, 1, 0),
    ("alexnet fc6 (linear)", 9216, 4096, 0, 0, 0),
]


@torch.no_grad()
def measure(spec: tuple[str, int, int, int, int, int], batch: int, warmup: int, repeats: int,
            threads: int, budget_s: float) -> dict[str, Any]:
    name, c_in, c_out, side, kernel, padding = spec
    config = BinaryConfig(method="xnor_net")
    if kernel:
        layer = nn.Conv2d(c_in, c_out, kernel, padding=padding)
        simulated = BinaryConv2d.from_float(layer, config)
        packed = PackedXnorConv2d.from_binary(simulated)
        x = torch.randn(batch, c_in, side, side)
        n_bits, rows = c_in * kernel * kernel, batch * side * side  # stride 1, "same" output
    else:
        layer = nn.Linear(c_in, c_out)
        simulated = BinaryLinear.from_float(layer, config)
        packed = PackedXnorLinear.from_binary(simulated)
        x = torch.randn(batch, c_in)
        n_bits, rows = c_in, batch
    words = words_for(n_bits)
    reference = simulated(x)
    got = packed(x)
    row: dict[str, Any] = {
        "layer": name, "batch": batch, "in": c_in, "out": c_out, "input_side": side or None,
        "kernel": kernel or None, "K": n_bits, "words_per_dot": words, "repeats": repeats,
        "macs": rows * c_out * n_bits, "word_ops": rows * c_out * words,
        "word_op_ratio": n_bits / words,
        "paper_estimate": WORD_BITS * n_bits / (n_bits + WORD_BITS),
        "packed_equals_simulation": bool(torch.equal(got, reference)),
        "packed_max_rel_error": ((got - reference).abs().max()
                                 / reference.abs().max().clamp_min(1e-30)).item(),
        "weight_bytes_fp32": 4 * layer.weight.numel(),
        "weight_bytes_packed": packed.weight_bits.numel() * 8,
    }
    if kernel:  # the im2col rows the packed layer builds, packed once outside the timing
        patches = torch.nn.functional.unfold((x < 0).float(), kernel, padding=padding)
        a = pack_sign_bits(patches.transpose(1, 2).reshape(-1, n_bits).numpy() > 0)
        b = packed.weight_bits.numpy().view("uint64")[0]
    else:
        a, b = sign_bits(x), packed.weight_bits.numpy().view("uint64")
    runs = {"fp32": (lambda: layer(x), threads), "fp32_1thread": (lambda: layer(x), 1),
            "simulation": (lambda: simulated(x), threads), "packed": (lambda: packed(x), threads),
            "popcount_kernel": (lambda: xnor_popcount_dot(a, b, n_bits), threads)}
    for key, (fn, n_threads) in runs.items():
        torch.set_num_threads(n_threads)
        row[f"{key}_ms"], row[f"{key}_min_ms"], row[f"{key}_passes"] = timed_ms(
            fn, warmup, repeats, budget_s)
    torch.set_num_threads(threads)
    for key in ("fp32", "fp32_1thread", "simulation"):
        row[f"speedup_packed_vs_{key}"] = row[f"{key}_ms"] / row["packed_ms"]
    row["speedup_kernel_vs_fp32_1thread"] = row["fp32_1thread_ms"] / row["popcount_kernel_ms"]
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=30, help="timed passes at small batches")
    parser.add_argument("--large-repeats", type=int, default=5,
                        help=f"timed passes at batches over {LARGE_BATCH}")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=3.0,
                        help="seconds of timed passes per method and layer before stopping early")
    parser.add_argument("--layers", type=int, nargs="+", default=None,
                        help=f"indices into the layer list (0-{len(LAYERS) - 1}); default all")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every layer's channels and features (tests: small sizes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default=None)
    args = parser.parse_args(argv)
    if min(args.batches) < 1 or args.repeats < 1 or args.large_repeats < 1 or args.threads < 1:
        parser.error("--batches, --repeats, --large-repeats and --threads must be >= 1")
    if not 0 < args.scale <= 1:
        parser.error(f"--scale must be in (0, 1], got {args.scale}")
    indices = args.layers if args.layers is not None else range(len(LAYERS))
    bad = [i for i in indices if not 0 <= i < len(LAYERS)]
    if bad:
        parser.error(f"--layers takes indices 0-{len(LAYERS) - 1}, got {bad}")
    specs = [LAYERS[i] for i in indices]
    if args.scale != 1:
        specs = [(name, max(1, round(c * args.scale)), max(1, round(o * args.scale)),
                  max(kernel, round(side * args.scale)) if kernel else 0, kernel, padding)
                 for name, c, o, side, kernel, padding in specs]

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = []
    for batch in args.batches:
        repeats = args.large_repeats if batch > LARGE_BATCH else args.repeats
        for spec in specs:
            row = measure(spec, batch, args.warmup, repeats, args.threads, args.budget)
            rows.append(row)
            print(f"batch {batch:3d} {row['layer']:37s} K={row['K']:5d}: fp32 "
                  f"{row['fp32_ms']:8.2f} ms (1 thread {row['fp32_1thread_ms']:8.2f}), "
                  f"simulation {row['simulation_ms']:8.2f}, packed {row['packed_ms']:8.2f} "
                  f"(kernel {row['popcount_kernel_ms']:7.2f}): packed/fp32 "
                  f"{row['speedup_packed_vs_fp32']:.2f}x, word ops {row['word_op_ratio']:.1f}x, "
                  f"exact {row['packed_equals_simulation']}")
    result = {"precision": "fp32", "torch_threads": args.threads, "numpy_threads": 1,
              "torch": torch.__version__, "numpy": __import__("numpy").__version__,
              "warmup": args.warmup, "scale": args.scale, "budget_s": args.budget,
              "repeats": {"small_batches": args.repeats,
                          f"batches_over_{LARGE_BATCH}": args.large_repeats},
              "statistic": "median ms per forward of the layer alone (*_min_ms: the fastest; "
                           "*_passes: how many were timed)",
              "load_average_before": list(load_before),
              "load_average_after": list(os.getloadavg()),
              "seconds": time.perf_counter() - started, "layers": rows}
    write_result("xnor_speed", result, args.output)
    return result


if __name__ == "__main__":
    main()
