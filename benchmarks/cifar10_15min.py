"""Wall time to a trained CIFAR-10 SqueezeNet on this machine, data decoding included.

Runs ``squeezelab train RECIPE`` as a user would, in a subprocess, with an empty decode cache
(so the JPEG decode is part of the time), then records the wall time, the final test top-1
and the run directory in benchmarks/results/cifar10_15min.json.

    python benchmarks/cifar10_15min.py                          # recipes/cifar10_fast.yaml
    python benchmarks/cifar10_15min.py --recipe recipes/x.yaml --keep-cache
    python benchmarks/cifar10_15min.py --recipe recipes/cifar10_15min.yaml --ablate all

``--ablate PART,...`` (or ``all``: every part the recipe switches on) is the ablation table:
the recipe again with each part switched off (``ABLATIONS``), for the same epochs (with a
``time_budget`` in the recipe: for the same seconds, each row keeping the epochs it fits), timed
the same way; the test-time parts need no new training, so the full recipe's model is scored again
without them (``squeezelab eval``). The JSON is written after every row, and a run whose
folder already holds a finished run of the same name is reused with the timing it recorded,
and an unfinished one is resumed (``train --resume``; its record says ``resumed``, its wall
time then covering the last piece only), so an interrupted ablation continues where it stopped.
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

#: part -> (the recipe key that switches it on, its "off" value, the flags that switch it off):
#: trained again without it. A key under model_args is written "model_args.KEY".
ABLATIONS = {
    "progressive_sizes": ("progressive_sizes", None, ["--progressive-sizes", "[32]"]),
    "stem_init": ("stem_init", "default", ["--stem-init", "default"]),
    "freeze_stem": ("freeze_stem", False, ["--freeze-stem", "false"]),
    "identity_init": ("model_args.identity_init", False,
                      ["--model-arg", "identity_init=false"]),
    "norm_lr_scale": ("norm_lr_scale", 1, ["--norm-lr-scale", "1"]),
    "freeze_bn_scale": ("freeze_bn_scale", False, ["--freeze-bn-scale", "false"]),
    "bn_momentum": ("bn_momentum", None, ["--bn-momentum", "none"]),
    "crop_padding": ("crop_padding", 4, ["--crop-padding", "4"]),
    "lookahead": ("lookahead_steps", 0, ["--lookahead-steps", "0"]),
    "ema": ("ema_decay", 0, ["--ema-decay", "0"]),
    "label_smoothing": ("label_smoothing", 0, ["--label-smoothing", "0"]),
}
#: part -> (recipe key, off value, the eval flags that score the full recipe's model without it)
TEST_TIME_ABLATIONS = {
    "test_time_translate": ("test_time_translate", 0, ["--test-time-translate", "0"]),
    "test_time_flip": ("test_time_flip", False,
                       ["--test-time-flip", "false", "--test-time-translate", "0"]),
}
#: what each run's timing is kept in, inside its run folder (so a finished run is reused)
TIMING_FILE = "bench_timing.json"


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

    parts = _parts(args.ablate, args.recipe)
    full = timed_run(args, args.run_name, [])
    result = {**full, "ablations": []}
    if parts:
        write_result("cifar10_15min", result, args.output)
    for part in parts:
        if part in TEST_TIME_ABLATIONS:
            row = rescored(full["run_dir"], TEST_TIME_ABLATIONS[part][2])
        else:
            row = timed_run(args, f"{args.run_name}-no-{part}", ABLATIONS[part][2])
        row = {"removed": part, **row,
               "top1_change_points": 100 * (row["test_top1"] - full["test_top1"])}
        result["ablations"].append(row)
        print(f"without {part}: top-1 {100 * row['test_top1']:.2f}% "
              f"({row['top1_change_points']:+.2f} points)", flush=True)
        write_result("cifar10_15min", result, args.output)
    if not parts:
        write_result("cifar10_15min", result, args.output)
    return 0


def _parts(spec: str | None, recipe: str) -> list[str]:
    known = [*ABLATIONS, *TEST_TIME_ABLATIONS]
    if not spec:
        return []
    if spec == "all":  # the parts the recipe switches on
        import yaml

        values = yaml.safe_load(Path(recipe).read_text()) or {}
        table = {**ABLATIONS, **TEST_TIME_ABLATIONS}
        return [p for p in known if _recipe_value(values, *table[p][:2]) != table[p][1]]
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise SystemExit(f"--ablate: unknown part(s) {', '.join(unknown)}; known: "
                         f"{', '.join(known)} (or all)")
    return parts


def _recipe_value(values: dict, key: str, default):
    """The recipe's value of ``key`` ("model_args.KEY" looks inside model_args)."""
    *parents, name = key.split(".")
    for parent in parents:
        values = values.get(parent) or {}
    return values.get(name, default)


def timed_run(args: argparse.Namespace, run_name: str, flags: list[str]) -> dict:
    """``squeezelab train RECIPE`` with ``flags``, timed from the start of the process to its
    end (decode included unless --keep-cache)."""
    run_dir = Path(args.out_dir) / run_name
    timing_path = run_dir / TIMING_FILE
    if (run_dir / "summary.json").is_file() and timing_path.is_file():
        print(f"reusing the finished run {run_dir}", flush=True)
        timing = json.loads(timing_path.read_text())
    else:
        env = dict(os.environ)
        if not args.keep_cache:
            env["SQUEEZELAB_CACHE"] = tempfile.mkdtemp(prefix="squeezelab-bench-cache-")
        # an interrupted run (the machine stopped) continues from its last checkpoint; its
        # wall time then covers the last piece only, and the record says so
        resumed = (run_dir / "config.yaml").is_file()
        cmd = ([sys.executable, "-m", "squeezelab", "train", "--resume", str(run_dir)]
               if resumed else
               [sys.executable, "-m", "squeezelab", "train", args.recipe, "--out-dir",
                args.out_dir, "--run-name", run_name, *flags, *args.extra])
        print("$", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True)
        timing = {"wall_seconds": time.perf_counter() - t0,
                  "decode_included": not args.keep_cache, "resumed": resumed}
        timing_path.write_text(json.dumps(timing) + "\n")
    wall = timing["wall_seconds"]
    summary = json.loads((run_dir / "summary.json").read_text())
    final = summary["final"]
    result = {
        "recipe": str(Path(args.recipe).relative_to(ROOT)) if Path(args.recipe).is_relative_to(
            ROOT) else args.recipe,
        "flags": flags + list(args.extra),
        "wall_seconds": wall, "budget_seconds": args.budget_s,
        "within_budget": wall <= args.budget_s,
        "decode_included": timing["decode_included"],
        # a resumed run's wall time is its last piece's: not a measure of the budget
        "resumed": timing.get("resumed", False),
        "test_top1": final.get("test_top1"), "test_top5": final.get("test_top5"),
        "test_protocol": final.get("test_protocol"),
        "epochs": summary["epochs"], "train_seconds": summary["total_train_seconds"],
        "parameters": summary["parameters"], "run_dir": str(run_dir),
        # a recipe with a time_budget kept the epochs its first one said fit on this machine
        "time_budget": (json.loads((run_dir / "time_budget.json").read_text())
                        if (run_dir / "time_budget.json").is_file() else None),
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
