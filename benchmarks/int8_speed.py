"""Compressed inference against what a user would otherwise run, in one process on one machine.

    python benchmarks/int8_speed.py MODEL.sqz DENSE_CHECKPOINT [--limit-test 2000] \
        [--threads 2] [--calibration 512] [-o benchmarks/results/int8_speed_NAME.json]

Rows (each: top-1 on the test images, fp32 without flip unless int8; latency at batch 1,
median of 200 passes; throughput at batch 64, median of 20; bytes of what ships). The passes
are spread over ``--rounds`` rounds that time every model in turn, and the file's int8 is set
against ONNX Runtime's int8 of the dense model round by round (``head_to_head``: the median
speed-up and its range), so a drift of the machine's speed cannot favour either:

* the dense checkpoint in PyTorch eager fp32, in ONNX Runtime fp32, and quantized by ONNX
  Runtime's own static int8 (QDQ, per-channel weights, min-max ranges from ``--calibration``
  training images): what a user would otherwise pick;
* MODEL.sqz in PyTorch eager (as ``load_compressed`` gives it) and, when the file carries an
  int8 calibration (``compress --int8-calibration``), as int8 built from the file alone
  (``load_model(path, int8=True)``).

Times are ratios within this run only; on a shared 2-core machine, say what else ran.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from squeezelab.data import load_split, resolve_default_cifar10  # noqa: E402
from squeezelab.data.preprocess import Preprocess  # noqa: E402
from squeezelab.export import export_onnx  # noqa: E402
from squeezelab.inference import OnnxModel, load_model  # noqa: E402
from squeezelab.int8 import calibrate, calibration_images, quantized_onnx  # noqa: E402
from squeezelab.train.evaluate import EvalProtocol, evaluate_data  # noqa: E402


def _timings(model: torch.nn.Module, images: torch.Tensor, b1_passes: int,
             b64_passes: int) -> tuple[list[float], list[float]]:
    """Seconds of ``b1_passes`` single-image passes and images per second of ``b64_passes``
    batches of 64, after a few warm-up passes."""
    one, batch = images[:1], images[:64]
    with torch.no_grad():
        for _ in range(3):
            model(one), model(batch)
        latency = []
        for _ in range(b1_passes):
            t0 = time.perf_counter()
            model(one)
            latency.append(time.perf_counter() - t0)
        throughput = []
        for _ in range(b64_passes):
            t0 = time.perf_counter()
            model(batch)
            throughput.append(64 / (time.perf_counter() - t0))
    return latency, throughput


def timed_rounds(models: dict[str, torch.nn.Module], images: torch.Tensor, rounds: int,
                 b1_passes: int = 200, b64_passes: int = 20) -> dict[str, dict[str, Any]]:
    """Every model timed in each of ``rounds`` rounds, in turn (the order rotating from one
    round to the next), so that a machine whose speed drifts -- a shared virtual machine's
    does by tens of percent within minutes -- slows all of them alike instead of whichever
    happened to run last. Per model: the median over all rounds (batch-1 latency in ms,
    batch-64 images per second) and each round's own median, for ratios round by round."""
    names = list(models)
    per = {n: {"b1": [], "b64": [], "rounds_b1_ms": [], "rounds_b64": []} for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            latency, throughput = _timings(models[name], images, max(1, b1_passes // rounds),
                                           max(1, b64_passes // rounds))
            per[name]["b1"] += latency
            per[name]["b64"] += throughput
            per[name]["rounds_b1_ms"].append(1e3 * statistics.median(latency))
            per[name]["rounds_b64"].append(statistics.median(throughput))
    return {n: {"latency_b1_ms": 1e3 * statistics.median(t["b1"]),
                "throughput_b64": statistics.median(t["b64"]),
                "rounds_latency_b1_ms": t["rounds_b1_ms"],
                "rounds_throughput_b64": t["rounds_b64"]} for n, t in per.items()}


def head_to_head(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """How much faster ``ours`` ran than ``theirs``, round by round (their time over ours at
    batch 1, our images per second over theirs at batch 64): the median and the range."""
    b1 = [t / o for o, t in zip(ours["rounds_latency_b1_ms"], theirs["rounds_latency_b1_ms"])]
    b64 = [o / t for o, t in zip(ours["rounds_throughput_b64"],
                                 theirs["rounds_throughput_b64"])]
    return {"speedup_b1_median": statistics.median(b1), "speedup_b1_range": [min(b1), max(b1)],
            "speedup_b64_median": statistics.median(b64),
            "speedup_b64_range": [min(b64), max(b64)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sqz")
    p.add_argument("dense", help="the dense checkpoint (or run) MODEL.sqz was compressed from")
    p.add_argument("--limit-test", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration", type=int, default=512,
                   help="training images ONNX Runtime's int8 of the dense model calibrates on")
    p.add_argument("--rounds", type=int, default=5,
                   help="time every model this many times in turn (drift slows all alike)")
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    dense, dense_meta = load_model(args.dense)
    source = (dense_meta.get("config") or {}).get("data") or resolve_default_cifar10()
    test = load_split(source, "test", limit=args.limit_test)
    train = load_split(source, "train")
    # another draw of training images than the pipeline's (seed 0) for the dense model's own
    cal_images = calibration_images(train, args.calibration, seed=1)
    timing_images = Preprocess.from_data(train).normalize(test.images[:64])
    protocol = EvalProtocol("fp32", False)
    models: dict[str, torch.nn.Module] = {}
    rows: list[dict[str, Any]] = []

    def add(name: str, model: torch.nn.Module, nbytes: int) -> dict[str, Any]:
        row = {"model": name, "top1": evaluate_data(model, test, protocol)["top1"],
               "bytes": nbytes}
        models[name] = model
        rows.append(row)
        print(f"{name:<44} top-1 {row['top1']:.4f}  {nbytes:>10,} B", flush=True)
        return row

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32_onnx = export_onnx(dense, tmp / "dense.onnx")
        add("dense, PyTorch eager fp32", dense, fp32_onnx.stat().st_size)
        add("dense, ONNX Runtime fp32", OnnxModel(fp32_onnx, threads=args.threads),
            fp32_onnx.stat().st_size)
        # ONNX Runtime's own static int8 of the dense model: the same quantizer and settings
        # as ours, ranges measured on training images (what its documentation walks through)
        dense_int8 = OnnxModel(quantized_onnx(dense, calibrate(dense, cal_images)),
                               threads=args.threads)
        theirs = add("dense, ONNX Runtime static int8 (QDQ)", dense_int8,
                     dense_int8.size_bytes)["model"]
        sqz_path = Path(args.sqz)
        sqz_model, meta = load_model(sqz_path)
        add(f"{sqz_path.name}, PyTorch eager fp32", sqz_model, sqz_path.stat().st_size)
        ours = None
        if "int8" in meta:
            t0 = time.perf_counter()
            sqz_int8, _ = load_model(sqz_path, int8=True)
            build_s = time.perf_counter() - t0
            ours = add(f"{sqz_path.name}, int8 from the file", sqz_int8,
                       sqz_path.stat().st_size)
            ours["build_s"] = build_s
            ours = ours["model"]
        print(f"timing, {args.rounds} rounds of every model in turn", flush=True)
        timed = timed_rounds(models, timing_images, args.rounds)
    for row in rows:
        row.update(timed[row["model"]])
        print(f"{row['model']:<44} {row['latency_b1_ms']:6.2f} ms (b1)  "
              f"{row['throughput_b64']:7.0f} img/s (b64)", flush=True)
    versus = None
    if ours is not None:
        versus = {"ours": ours, "theirs": theirs, **head_to_head(timed[ours], timed[theirs])}
        print(f"int8 from the file against ONNX Runtime's int8 of the dense model, round by "
              f"round: {versus['speedup_b1_median']:.2f}x at batch 1 (range "
              f"{versus['speedup_b1_range'][0]:.2f}-{versus['speedup_b1_range'][1]:.2f}), "
              f"{versus['speedup_b64_median']:.2f}x at batch 64 (range "
              f"{versus['speedup_b64_range'][0]:.2f}-{versus['speedup_b64_range'][1]:.2f})",
              flush=True)
    write_result("int8_speed", {"sqz": str(sqz_path), "dense": args.dense,
                                "test_images": len(test.labels), "threads": args.threads,
                                "calibration_images": args.calibration, "rounds": args.rounds,
                                "rows": rows, "head_to_head": versus},
                 args.output)


if __name__ == "__main__":
    main()
