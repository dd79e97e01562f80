"""Compressed inference against what a user would otherwise run, in one process on one machine.

    python benchmarks/int8_speed.py MODEL.sqz DENSE_CHECKPOINT [--limit-test 2000] \
        [--threads 2] [--calibration 512] [-o benchmarks/results/int8_speed_NAME.json]

Rows (each: top-1 on the test images, fp32 without flip unless int8; latency at batch 1,
median of 200 passes; throughput at batch 64, median of 20; bytes of what ships):

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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from squeezelab.data import load_split, resolve_default_cifar10  # noqa: E402
from squeezelab.data.preprocess import Preprocess  # noqa: E402
from squeezelab.export import export_onnx  # noqa: E402
from squeezelab.inference import OnnxModel, load_model  # noqa: E402
from squeezelab.int8 import calibrate, calibration_images, quantized_onnx  # noqa: E402
from squeezelab.train.evaluate import EvalProtocol, evaluate_data  # noqa: E402


def _timings(model: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    one, batch = images[:1], images[:64]
    with torch.no_grad():
        for _ in range(5):
            model(one), model(batch)
        latency = []
        for _ in range(200):
            t0 = time.perf_counter()
            model(one)
            latency.append(time.perf_counter() - t0)
        throughput = []
        for _ in range(20):
            t0 = time.perf_counter()
            model(batch)
            throughput.append(64 / (time.perf_counter() - t0))
    return {"latency_b1_ms": 1e3 * statistics.median(latency),
            "throughput_b64": statistics.median(throughput)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sqz")
    p.add_argument("dense", help="the dense checkpoint (or run) MODEL.sqz was compressed from")
    p.add_argument("--limit-test", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration", type=int, default=512,
                   help="training images ONNX Runtime's int8 of the dense model calibrates on")
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
    rows = []

    def measure(name: str, model: torch.nn.Module, nbytes: int) -> None:
        row = {"model": name, "top1": evaluate_data(model, test, protocol)["top1"],
               "bytes": nbytes, **_timings(model, timing_images)}
        rows.append(row)
        print(f"{name:<44} top-1 {row['top1']:.4f}  {row['latency_b1_ms']:6.2f} ms (b1)  "
              f"{row['throughput_b64']:7.0f} img/s (b64)  {nbytes:>10,} B", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32_onnx = export_onnx(dense, tmp / "dense.onnx")
        measure("dense, PyTorch eager fp32", dense, fp32_onnx.stat().st_size)
        measure("dense, ONNX Runtime fp32", OnnxModel(fp32_onnx, threads=args.threads),
                fp32_onnx.stat().st_size)
        # ONNX Runtime's own static int8 of the dense model: the same quantizer and settings
        # as ours, ranges measured on training images (what its documentation walks through)
        dense_int8 = OnnxModel(quantized_onnx(dense, calibrate(dense, cal_images)),
                               threads=args.threads)
        measure("dense, ONNX Runtime static int8 (QDQ)", dense_int8, dense_int8.size_bytes)
        sqz_path = Path(args.sqz)
        sqz_model, meta = load_model(sqz_path)
        measure(f"{sqz_path.name}, PyTorch eager fp32", sqz_model, sqz_path.stat().st_size)
        if "int8" in meta:
            t0 = time.perf_counter()
            sqz_int8, _ = load_model(sqz_path, int8=True)
            build_s = time.perf_counter() - t0
            measure(f"{sqz_path.name}, int8 from the file", sqz_int8, sqz_path.stat().st_size)
            rows[-1]["build_s"] = build_s
    write_result("int8_speed", {"sqz": str(sqz_path), "dense": args.dense,
                                "test_images": len(test.labels), "threads": args.threads,
                                "calibration_images": args.calibration, "rows": rows},
                 args.output)


if __name__ == "__main__":
    main()
