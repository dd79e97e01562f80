"""Wall time to a trained CIFAR-10 SqueezeNet on this machine, data decoding included.

Runs ``squeezelab train RECIPE`` as a user would, in a subprocess, with an empty decode cache
(so the JPEG decode is part of the time), then records the wall time, the final test top-1
and the run directory in benchmarks/results/cifar10_15min.json.

    python benchmarks/cifar10_15min.py                          # recipes/cifar10_fast.yaml
    python benchmarks/cifar10_15min.py --recipe recipes/x.yaml --keep-cache
    python benchmarks/cifar10_15min.py --recipe recipes/cifar10_15min.yaml --ablate all

``--ablate PART,...`` (or ``all``) is the ablation table: the recipe again with each part
switched off (``ABLATIONS``), timed the same way; the test-time parts need no new training, so
the full recipe's model is scored again without them (``squeezelab eval``).
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

#: part -> the flags that switch it off: trained again without it
ABLATIONS = {
    "progressive_sizes": ["--progressive-sizes", "[32]"],
    "stem_init": ["--stem-init", "default"],
    "lookahead": ["--lookahead-steps", "0"],
    "ema": ["--ema-decay", "0"],
    "label_smoothing": ["--label-smoothing", "0"],
}
#: part -> the eval flags that score the full recipe's model without it
TEST_TIME_ABLATIONS = {
    "test_time_translate": ["--test-time-translate", "0"],
    "test_time_flip": ["--test-time-flip", "false", "--test-time-translate", "0"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "cifar10_fast.yaml"))
    parser.add_argument("--out-dir", default=str(ROOT / "runs"))
    parser.add_argument("--run-name", default=f"cifar10_15min-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--keep-cache", action="store_true",
                        help="reuse the user's decode cache instead of decoding from scratch")
    parser.add_argument("--budget-s", type=float, default=15 * 60)
    parser.add_argument("--output", default=None)
    parser.add_argument("--ablate", default=None, metavar="PART,...",
                        help="also run without each part: "
                        f"{', '.join([*ABLATIONS, *TEST_TIME_ABLATIONS])}, or all")
    parser.add_argument("extra", nargs="*", help="more flags for squeezelab train")
    args = parser.parse_args(argv)

    parts = _parts(args.ablate)
    full = timed_run(args, args.run_name, [])
    result = {**full, "ablations": []}
    for part in parts:
        if part in TEST_TIME_ABLATIONS:
            result["ablations"].append(
                {"removed": part, **rescored(full["run_dir"], TEST_TIME_ABLATIONS[part])})
        else:
            run = timed_run(args, f"{args.run_name}-no-{part}", ABLATIONS[part])
            result["ablations"].append({"removed": part, **run})
    for row in result["ablations"]:
        print(f"without {row['removed']}: top-1 {100 * row['test_top1']:.2f}% "
              f"({100 * (row['test_top1'] - full['test_top1']):+.2f} points)")
    write_result("cifar10_15min", result, args.output)
    return 0


def _parts(spec: str | None) -> list[str]:
    known = [*ABLATIONS, *TEST_TIME_ABLATIONS]
    if not spec:
        return []
    parts = known if spec == "all" else [p.strip() for p in spec.split(",") if p.strip()]
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise SystemExit(f"--ablate: unknown part(s) {', '.join(unknown)}; known: "
                         f"{', '.join(known)} (or all)")
    return parts


def timed_run(args: argparse.Namespace, run_name: str, flags: list[str]) -> dict:
    """``squeezelab train RECIPE`` with ``flags``, timed from the start of the process to its
    end (decode included unless --keep-cache)."""
    env = dict(os.environ)
    cache = None
    if not args.keep_cache:
        cache = tempfile.mkdtemp(prefix="squeezelab-bench-cache-")
        env["SQUEEZELAB_CACHE"] = cache
    cmd = [sys.executable, "-m", "squeezelab", "train", args.recipe, "--out-dir", args.out_dir,
           "--run-name", run_name, *flags, *args.extra]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    wall = time.perf_counter() - t0
    run_dir = Path(args.out_dir) / run_name
    summary = json.loads((run_dir / "summary.json").read_text())
    final = summary["final"]
    result = {
        "recipe": str(Path(args.recipe).relative_to(ROOT)) if Path(args.recipe).is_relative_to(
            ROOT) else args.recipe,
        "flags": flags + list(args.extra),
        "wall_seconds": wall, "budget_seconds": args.budget_s,
        "within_budget": wall <= args.budget_s,
        "decode_included": cache is not None,
        "test_top1": final.get("test_top1"), "test_top5": final.get("test_top5"),
        "test_protocol": final.get("test_protocol"),
        "epochs": summary["epochs"], "train_seconds": summary["total_train_seconds"],
        "parameters": summary["parameters"], "run_dir": str(run_dir),
        "data_note": "CIFAR-10 JPEG copy (lossy re-encoding of the official images): "
                     "accuracy can sit slightly below the official binary release",
    }
    print(f"wall {wall:.0f} s (budget {args.budget_s:.0f} s), test top-1 "
          f"{100 * result['test_top1']:.2f}%")
    return result


def rescored(run_dir: str, flags: list[str]) -> dict:
    """The test top-1 of a run's final model under other test-time flags."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        cmd = [sys.executable, "-m", "squeezelab", "eval", run_dir, *flags, "--json", str(out)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        scored = json.loads(out.read_text())
    return {"flags": flags, "test_top1": scored["top1"], "test_top5": scored["top5"],
            "test_protocol": scored.get("protocol"), "retrained": False}


if __name__ == "__main__":
    sys.exit(main())
