"""CPU latency of the compact study's models: every variant of recipes/studies/compact.yaml
(the CIFAR SqueezeNet with its expand3x3 four ways, the small GoogLeNet, MobileNetV2 and the
bottleneck ResNet), timed in one run under the same conditions.

For each: parameters, MACs per 32x32 image, and the median forward time of batch 1 and of
batch 64 in eval mode, fp32 NCHW, on ``--threads`` intra-op threads (2: the reference
machine's cores), after warm-up passes in which oneDNN picks its kernels. The variants are
timed in turn, ``--rounds`` times round, and each figure is the median of the rounds'
medians: a load that comes and goes during the run then falls on every variant alike rather
than on whichever was being timed. The models keep their random initialisation: dense
kernels take the same time whatever the weights. The load average before and after is
recorded, since a second process on the cores slows every figure.

    python benchmarks/compact_latency.py [--variants NAME ...] [--repeats 30]
        [--batch-repeats 8] [--rounds 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from squeezelab import create_model  # noqa: E402
from squeezelab.metrics import count_macs, count_parameters, time_forward  # noqa: E402
from squeezelab.workflows.studies import load_study  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "studies" / "compact.yaml"
SIDE = 32  # CIFAR images
BIG_BATCH = 64


def study_variants() -> list[dict[str, Any]]:
    """The compact study's ``model`` axis: name, registry model and model_args of each."""
    study = load_study(RECIPE)
    return [{"name": v["name"], "model": v.get("model", study.base["model"]),
             "model_args": dict(v.get("model_args", {}))} for v in study.axes["model"]]


def timings(variant: dict[str, Any], model: torch.nn.Module, rounds: list[dict[str, Any]]
            ) -> dict[str, Any]:
    """One variant's row from its per-round ``time_forward`` results (batch 1 and batch 64)."""
    one = [r["batch1"] for r in rounds]
    many = [r["batch"] for r in rounds]
    params = count_parameters(model)
    many_ms = 1000 * statistics.median(m["median_s"] for m in many)
    row = {**variant, "parameters": params, "fp32_bytes": 4 * params,
           "macs": count_macs(model, SIDE),
           "batch1_median_ms": 1000 * statistics.median(o["median_s"] for o in one),
           "batch1_min_ms": 1000 * min(o["min_s"] for o in one),
           "batch1_round_medians_ms": [1000 * o["median_s"] for o in one],
           f"batch{BIG_BATCH}_median_ms": many_ms,
           f"batch{BIG_BATCH}_images_per_s": BIG_BATCH / (many_ms / 1000),
           f"batch{BIG_BATCH}_round_medians_ms": [1000 * m["median_s"] for m in many]}
    print(f"{variant['name']:<18} {params:>9,} params {row['macs'] / 1e6:>6.1f}M MACs  "
          f"batch 1: {row['batch1_median_ms']:7.2f} ms  batch {BIG_BATCH}: "
          f"{many_ms:8.1f} ms ({row[f'batch{BIG_BATCH}_images_per_s']:6.0f} img/s)", flush=True)
    return row


def measure(variants: list[dict[str, Any]], repeats: int, batch_repeats: int, rounds: int,
            seed: int) -> list[dict[str, Any]]:
    """Every variant timed in turn, ``rounds`` times round (warm-up passes in the first)."""
    models = []
    for variant in variants:
        torch.manual_seed(seed)
        models.append(create_model(variant["model"], **variant["model_args"]).eval())
    one = torch.randn(1, 3, SIDE, SIDE)
    many = torch.randn(BIG_BATCH, 3, SIDE, SIDE)
    per_model: list[list[dict[str, Any]]] = [[] for _ in models]
    for r in range(rounds):
        for model, results in zip(models, per_model):
            results.append({
                "batch1": time_forward(model, one, warmup=5 if r == 0 else 1, iters=repeats),
                "batch": time_forward(model, many, warmup=2 if r == 0 else 0,
                                      iters=batch_repeats)})
    return [timings(v, m, res) for v, m, res in zip(variants, models, per_model)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    variants = study_variants()
    names = [v["name"] for v in variants]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=names, default=names,
                        help="which of the study's variants to time (default: all)")
    parser.add_argument("--repeats", type=int, default=15,
                        help="batch-1 passes timed per round")
    parser.add_argument("--batch-repeats", type=int, default=4,
                        help=f"batch-{BIG_BATCH} passes timed per round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="times round the variants (each figure: the median of rounds)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default=None)
    args = parser.parse_args(argv)
    if min(args.repeats, args.batch_repeats, args.rounds, args.threads) < 1:
        parser.error("--repeats, --batch-repeats, --rounds and --threads must be >= 1")

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    try:
        chosen = [v for v in variants if v["name"] in args.variants]
        rows = measure(chosen, args.repeats, args.batch_repeats, args.rounds, args.seed)
    finally:
        torch.set_num_threads(threads)
    result = {"recipe": str(RECIPE.relative_to(RECIPE.parents[2])), "input": SIDE,
              "threads": args.threads, "precision": "fp32", "layout": "NCHW",
              "repeats": args.repeats, "batch_repeats": args.batch_repeats,
              "rounds": args.rounds,
              "load_average_before": list(load_before),
              "load_average_after": list(os.getloadavg()), "variants": rows}
    write_result("compact_latency", result, args.output)
    return result


if __name__ == "__main__":
    main()
