"""Wall time to a trained CIFAR-10 SqueezeNet on this machine, data decoding included.

Runs ``squeezelab train RECIPE`` as a user would, in a subprocess, with an empty decode cache
(so the JPEG decode is part of the time), then records the wall time, the final test top-1
and the run directory in benchmarks/results/cifar10_15min.json.

    python benchmarks/cifar10_15min.py                          # recipes/cifar10_fast.yaml
    python benchmarks/cifar10_15min.py --recipe recipes/x.yaml --keep-cache
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "cifar10_fast.yaml"))
    parser.add_argument("--out-dir", default=str(ROOT / "runs"))
    parser.add_argument("--run-name", default=f"cifar10_15min-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--keep-cache", action="store_true",
                        help="reuse the user's decode cache instead of decoding from scratch")
    parser.add_argument("--budget-s", type=float, default=15 * 60)
    parser.add_argument("--output", default=None)
    parser.add_argument("extra", nargs="*", help="more flags for squeezelab train")
    args = parser.parse_args()

    env = dict(os.environ)
    cache = None
    if not args.keep_cache:
        cache = tempfile.mkdtemp(prefix="squeezelab-bench-cache-")
        env["SQUEEZELAB_CACHE"] = cache
    cmd = [sys.executable, "-m", "squeezelab", "train", args.recipe, "--out-dir", args.out_dir,
           "--run-name", args.run_name, *args.extra]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    wall = time.perf_counter() - t0
    run_dir = Path(args.out_dir) / args.run_name
    summary = json.loads((run_dir / "summary.json").read_text())
    final = summary["final"]
    result = {
        "recipe": str(Path(args.recipe).relative_to(ROOT)) if Path(args.recipe).is_relative_to(
            ROOT) else args.recipe,
        "wall_seconds": wall, "budget_seconds": args.budget_s,
        "within_budget": wall <= args.budget_s,
        "decode_included": cache is not None,
        "test_top1": final.get("test_top1"), "test_top5": final.get("test_top5"),
        "epochs": summary["epochs"], "train_seconds": summary["total_train_seconds"],
        "parameters": summary["parameters"], "run_dir": str(run_dir),
        "data_note": "CIFAR-10 JPEG copy (lossy re-encoding of the official images): "
                     "accuracy can sit slightly below the official binary release",
    }
    print(f"wall {wall:.0f} s (budget {args.budget_s:.0f} s), test top-1 "
          f"{100 * result['test_top1']:.2f}%")
    write_result("cifar10_15min", result, args.output)


if __name__ == "__main__":
    main()
