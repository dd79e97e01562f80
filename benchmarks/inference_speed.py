"""Inference speed of the model zoo on this CPU, and whether pruning makes a model faster.

For each model: parameters, MACs, fp32 bytes, the latency of one image (median over repeats)
and the throughput of a batch, in eval mode on this machine's threads (fp32 NCHW unless
``--precision bf16`` / ``--channels-last``). Then the default
CIFAR SqueezeNet pruned two ways: magnitude pruning (70% of the weights set to zero inside
dense tensors) and channel removal (``prune --channels``: a smaller dense network). The first
runs the same dense kernels, so it is no faster; only the second does less work. Weights are
the random initialisation: with dense kernels the time does not depend on their values.

    python benchmarks/inference_speed.py [--models NAME ...] [--repeats 30] [--batch 64]
        [--channels-last] [--precision bf16]      # the layout and precision training autotunes
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from squeezelab import create_model  # noqa: E402
from squeezelab.compress.pruning.channels import remove_channels, smallest_channels  # noqa: E402
from squeezelab.compress.pruning.magnitude import PruneConfig, prune_  # noqa: E402
from squeezelab.metrics import count_macs, count_parameters, time_forward  # noqa: E402
from squeezelab.models import get_entry  # noqa: E402

DEFAULT_MODELS = ["squeezenet1_0", "squeezenet1_1", "alexnet", "mobilenet_v1",
                  "squeezenet_cifar", "squeezenet_cifar_e4", "mobilenet_v1_cifar",
                  "alexnet_cifar", "resnet18_cifar"]
PRUNED_BASE = "squeezenet_cifar"  # the default model, pruned both ways
MAGNITUDE_SPARSITY = 0.7
CHANNEL_FRACTIONS = (0.25, 0.5)


def timed(model: nn.Module, batch: torch.Tensor, repeats: int, precision: str) -> dict:
    """``metrics.time_forward`` (3 warm-up passes, then ``repeats`` timed) under bf16 autocast
    when asked."""
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    with autocast:
        return time_forward(model, batch, warmup=3, iters=repeats)


def measure(name: str, model: nn.Module, side: int, repeats: int, batch: int,
            channels_last: bool = False, precision: str = "fp32") -> dict[str, Any]:
    model.eval()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)

    def images(n: int) -> torch.Tensor:
        return torch.randn(n, 3, side, side).to(memory_format=layout)

    one = timed(model, images(1), repeats, precision)
    many_passes = max(3, repeats // 3)
    many = timed(model, images(batch), many_passes, precision)
    params = count_parameters(model)
    row = {"model": name, "input": side, "parameters": params, "fp32_bytes": 4 * params,
           "macs": count_macs(model, side),
           "batch1_median_ms": 1000 * one["median_s"],
           "batch1_min_ms": 1000 * one["min_s"],
           f"batch{batch}_images_per_s": batch / many["median_s"],
           f"batch{batch}_passes": many_passes}
    print(f"{name:<44} {side:>3}px {params:>11,} params {row['macs'] / 1e6:>8.1f}M MACs  "
          f"{row['batch1_median_ms']:8.2f} ms/image  "
          f"{row[f'batch{batch}_images_per_s']:8.0f} img/s (batch {batch})", flush=True)
    return row


def pruned_variants(seed: int) -> list[tuple[str, nn.Module]]:
    """The default CIFAR SqueezeNet dense, magnitude-pruned and with channels removed."""
    torch.manual_seed(seed)
    dense = create_model(PRUNED_BASE).eval()
    magnitude = copy.deepcopy(dense)
    prune_(magnitude, PruneConfig(sparsity=MAGNITUDE_SPARSITY))
    variants = [(f"{PRUNED_BASE} magnitude-pruned {MAGNITUDE_SPARSITY:.0%} (zeros, dense "
                 "kernels)", magnitude)]
    for fraction in CHANNEL_FRACTIONS:
        slim, _ = remove_channels(dense, smallest_channels(dense, fraction))
        variants.append((f"{PRUNED_BASE} {fraction:.0%} of removable channels cut", slim))
    return variants


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--repeats", type=int, default=30, help="batch-1 passes timed")
    parser.add_argument("--batch", type=int, default=64, help="the throughput batch size")
    parser.add_argument("--no-pruned", dest="pruned", action="store_false",
                        help="skip the pruned variants of the default model")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory layout")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: CPU autocast (fast only with AVX-512 BF16 or AMX)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default=None)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch < 1:
        parser.error("--repeats and --batch must be >= 1")

    rows = []
    for name in args.models:
        torch.manual_seed(args.seed)
        side = get_entry(name).default_input_size
        rows.append(measure(name, create_model(name), side, args.repeats, args.batch,
                            args.channels_last, args.precision))
    pruned = []
    if args.pruned:
        side = get_entry(PRUNED_BASE).default_input_size
        for name, model in pruned_variants(args.seed):
            pruned.append(measure(name, model, side, args.repeats, args.batch,
                                  args.channels_last, args.precision))
    result = {"precision": args.precision, "channels_last": args.channels_last,
              "torch_threads": torch.get_num_threads(),
              "repeats": args.repeats, "batch": args.batch, "models": rows, "pruned": pruned}
    write_result("inference_speed", result, args.output)
    return result


if __name__ == "__main__":
    main()
