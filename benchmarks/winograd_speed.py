"""PyTorch's conv2d vs Winograd F(2x2,3x3) and F(4x4,3x3) on SqueezeNet v1.1's expand3x3 layers.

For every expand3x3 layer of SqueezeNet v1.1 (its shapes at a 224 input: 16->64 at 55x55,
32->128 at 27x27, 48->192 and 64->256 at 13x13), at batch 1 and 64, fp32 NCHW: the median
time of ``nn.Conv2d`` (oneDNN's direct convolution) and of ``WinogradConv2d`` with each tile,
the largest difference of their outputs, and the multiplications each does
(``winograd_layer_multiplies``). The Winograd filter transform is computed once before timing,
as a deployed kernel does. Weights are the random initialisation and inputs ~ N(0, 1): the
time does not depend on their values.

Winograd here is a chain of PyTorch ops (pad, unfold-copy, four GEMMs for the transforms, one
batched matmul, a permute-copy), each a pass over memory; oneDNN's convolution is one fused
kernel. Fewer multiplications need not make it faster, and the figures say by how much.

    python benchmarks/winograd_speed.py [--batches 1 64] [--repeats 30] [--large-repeats 5]
        [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timed_ms, write_result  # noqa: E402

from squeezelab import create_model  # noqa: E402
from squeezelab.compress.winograd import (  # noqa: E402
    TILES,
    WinogradConv2d,
    winograd_layer_multiplies,
)

LARGE_BATCH = 8  # batches above this get --large-repeats timed passes (each pass is long)


def expand3x3_layers(model_name: str, side: int) -> list[tuple[str, nn.Conv2d, tuple[int, ...]]]:
    """(name, conv, input shape of one image) of every expand3x3 conv at a ``side`` input."""
    model = create_model(model_name).eval()
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [m.register_forward_hook(
        lambda mod, inp, out, name=name: shapes.__setitem__(name, tuple(inp[0].shape[1:])))
        for name, m in model.named_modules() if name.endswith("expand3x3")]
    with torch.no_grad():
        model(torch.zeros(1, 3, side, side))
    for h in handles:
        h.remove()
    return [(name, model.get_submodule(name), shapes[name]) for name in shapes]


@torch.no_grad()
def measure_layer(name: str, conv: nn.Conv2d, shape: tuple[int, ...], batch: int, warmup: int,
                  repeats: int) -> dict[str, Any]:
    x = torch.randn(batch, *shape)
    reference = conv(x)
    row: dict[str, Any] = {"layer": name, "batch": batch, "in_channels": conv.in_channels,
                           "out_channels": conv.out_channels, "input": list(shape[1:]),
                           "repeats": repeats}
    row["conv2d_ms"], row["conv2d_min_ms"], _ = timed_ms(partial(conv, x), warmup, repeats)
    for tile in TILES:
        wino = WinogradConv2d.from_conv(conv, tile, name)
        wino.transformed_weight()  # the filter transform, once, outside the timing
        key = f"winograd_f{tile}"
        row[f"{key}_ms"], row[f"{key}_min_ms"], _ = timed_ms(partial(wino, x), warmup,
                                                           repeats)
        row[f"{key}_speedup"] = row["conv2d_ms"] / row[f"{key}_ms"]
        row[f"{key}_max_abs_error"] = (wino(x) - reference).abs().max().item()
        counts = winograd_layer_multiplies(conv.in_channels, conv.out_channels,
                                           reference.shape[2], reference.shape[3], tile)
        row[f"{key}_multiplies"] = {k: v for k, v in counts.items() if k != "tile"}
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="squeezenet1_1")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=30, help="timed passes at small batches")
    parser.add_argument("--large-repeats", type=int, default=5,
                        help=f"timed passes at batches over {LARGE_BATCH}")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-layers", type=int, default=None, help="time only the first N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default=None)
    args = parser.parse_args(argv)
    if min(args.batches) < 1 or args.repeats < 1 or args.large_repeats < 1 or args.threads < 1:
        parser.error("--batches, --repeats, --large-repeats and --threads must be >= 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    layers = expand3x3_layers(args.model, args.input_size)[:args.max_layers]
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = []
    for batch in args.batches:
        repeats = args.large_repeats if batch > LARGE_BATCH else args.repeats
        for name, conv, shape in layers:
            row = measure_layer(name, conv, shape, batch, args.warmup, repeats)
            rows.append(row)
            print(f"batch {batch:3d} {name:22s} {conv.in_channels:3d}->{conv.out_channels:3d} "
                  f"{shape[1]}x{shape[2]}: conv2d {row['conv2d_ms']:8.2f} ms, "
                  f"F(2x2) {row['winograd_f2_ms']:8.2f} ms, F(4x4) {row['winograd_f4_ms']:8.2f} ms "
                  f"(err {row['winograd_f2_max_abs_error']:.1e} / "
                  f"{row['winograd_f4_max_abs_error']:.1e})")
    totals = {}
    for batch in args.batches:
        mine = [r for r in rows if r["batch"] == batch]
        totals[str(batch)] = {key: sum(r[key] for r in mine) for key in (
            "conv2d_ms", "winograd_f2_ms", "winograd_f4_ms")}
    result = {"model": args.model, "input_size": args.input_size, "precision": "fp32",
              "layout": "NCHW", "torch_threads": torch.get_num_threads(),
              "torch": torch.__version__, "warmup": args.warmup,
              "repeats": {"small_batches": args.repeats, f"batches_over_{LARGE_BATCH}":
                          args.large_repeats},
              "statistic": "median ms per forward of the layer alone (*_min_ms: the fastest)",
              "load_average_before": list(load_before),
              "load_average_after": list(os.getloadavg()),
              "seconds": time.perf_counter() - started,
              "layers": rows, "totals_ms_by_batch": totals}
    for batch, t in totals.items():
        print(f"batch {batch}: all layers conv2d {t['conv2d_ms']:.1f} ms, "
              f"F(2x2) {t['winograd_f2_ms']:.1f} ms, F(4x4) {t['winograd_f4_ms']:.1f} ms")
    write_result("winograd_speed", result, args.output)
    return result


if __name__ == "__main__":
    main()
