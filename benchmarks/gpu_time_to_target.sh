#!/usr/bin/env bash
# GPU time to a CIFAR-10 top-1 target with fewer than a million parameters (issue 20: "when a
# GPU is available, also record the GPU time to 94% with fewer than 1 M parameters; the data
# stays on the GPU and the step is compiled"), as one command with a hard deadline for a lent
# machine's minutes:
#
#   OUT=results_dir EPOCHS="16 32 64" TARGET=0.94 DEADLINE_S=300 bash benchmarks/gpu_time_to_target.sh
#
# It trains RECIPE (default recipes/cifar10_gpu.yaml: the model compiled, the uint8 images
# resident on the GPU, as BatchLoader keeps any data set under 4 GiB there) once for each
# schedule length in EPOCHS, shortest first, each a whole run timed by
# benchmarks/cifar10_15min.py, and stops at the first whose final model reaches TARGET: that
# run's seconds of training and scoring (decode and start-up excluded, as the GPU speed records
# count them; its wall time beside) are the time to the target. A cosine schedule reaches its
# accuracy only at its end, so a longer run's early epochs do not stand for a shorter run.
# Each run gets what is left of DEADLINE_S (SIGINT at the deadline: the run saves a checkpoint
# and is recorded as cut, with the epochs it trained and their seconds, under "unfinished").
# $OUT/time_to_target.json sums it up; each finished run's own JSON is beside it.
# TRAIN_FLAGS adds flags to every run (how the test makes it tiny on a CPU).
# Data and start-up as benchmarks/gpu_setup.sh says (carry .gpu/cifar10-jpeg.tar.xz).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
: "${OUT:?set OUT to the folder the results go to}"
RECIPE="${RECIPE:-recipes/cifar10_gpu.yaml}"
read -r -a EPOCH_LIST <<< "${EPOCHS:-16 32 64}"
TARGET="${TARGET:-0.94}"
DEADLINE_S="${DEADLINE_S:-300}"
ARCHIVE="${DATA_ARCHIVE:-.gpu/cifar10-jpeg.tar.xz}"
PY="${PYTHON:-python3}"
WORK="${WORK_DIR:-/tmp/gpu_time_to_target}"
SHARED_JPEG="${CIFAR10_JPEG:-../shared/data/cifar10-jpeg}"
read -r -a EXTRA <<< "${TRAIN_FLAGS:-}"

# shellcheck source=benchmarks/gpu_setup.sh
source "$ROOT/benchmarks/gpu_setup.sh"

status=0
for epochs in "${EPOCH_LIST[@]}"; do
  left=$(( DEADLINE_S - ($(date +%s) - start) ))
  if [ "$left" -lt 10 ]; then
    echo "only $left s left of DEADLINE_S=$DEADLINE_S: $epochs epochs not run" | tee -a "$OUT/train.log" >&2
    status=3
    break
  fi
  timeout -s INT -k 60 "$left" "$PY" benchmarks/cifar10_15min.py --recipe "$RECIPE" \
    --keep-cache --budget-s "$DEADLINE_S" --out-dir "$WORK/runs" --run-name "e$epochs" \
    --output "$OUT/run_e$epochs.json" -- --epochs "$epochs" "${EXTRA[@]}" 2>&1 | tee -a "$OUT/train.log"
  code=${PIPESTATUS[0]}
  echo "$epochs epochs: exit status $code after $(( $(date +%s) - start )) s" | tee -a "$OUT/train.log"
  echo "$epochs $code" >> "$OUT/attempts.txt"
  if [ "$code" -ne 0 ]; then status=$code; break; fi
  "$PY" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["test_top1"] >= float(sys.argv[2]) else 1)' \
    "$OUT/run_e$epochs.json" "$TARGET" && break
done

"$PY" - "$OUT" "$TARGET" "$RECIPE" "$WORK/runs" <<'PY'
import json, sys
from pathlib import Path
out, target, recipe, runs_dir = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
# a schedule that ended without its JSON (cut by the deadline, or failed): what its run folder
# says it trained, so a cut run still tells the next try its pace
unfinished = []
attempts = out / "attempts.txt"
for line in attempts.read_text().split("\n") if attempts.exists() else []:
    if not line.strip():
        continue
    epochs, code = map(int, line.split())
    if (out / f"run_e{epochs}.json").exists():
        continue
    metrics = runs_dir / f"e{epochs}" / "metrics.jsonl"
    rows = [json.loads(r) for r in metrics.read_text().splitlines() if r.strip()] \
        if metrics.exists() else []
    trained = [r for r in rows if "train_loss" in r]
    unfinished.append({
        "epochs": epochs, "exit_status": code,
        "ended": "cut by the deadline" if code in (124, 130, 137) else "failed",
        "epochs_trained": len(trained),
        "epoch_seconds": [round(r["seconds"], 3) for r in trained if "seconds" in r],
        "last_train_top1": trained[-1].get("train_top1") if trained else None})
runs = []
for path in sorted(out.glob("run_e*.json"), key=lambda p: int(p.stem[5:])):
    r = json.loads(path.read_text())
    runs.append({k: r.get(k) for k in ("epochs", "test_top1", "test_top5", "train_seconds",
                                       "wall_seconds", "parameters", "test_protocol", "flags")}
                | {"met": r["test_top1"] >= target, "file": path.name})
met = [r for r in runs if r["met"]]
summary = {"benchmark": "gpu_time_to_target", "recipe": recipe, "target_top1": target,
           "machine": (out / "machine.txt").read_text(), "runs": runs,
           "unfinished": unfinished,
           "time_to_target_seconds": met[0]["train_seconds"] if met else None,
           "reached_with_epochs": met[0]["epochs"] if met else None,
           "best_top1": max((r["test_top1"] for r in runs), default=None)}
(out / "time_to_target.json").write_text(json.dumps(summary, indent=2) + "\n")
print("time to target:", "not reached" if not met else
      f"{met[0]['train_seconds']:.1f} s ({met[0]['epochs']} epochs)",
      "| best top-1", summary["best_top1"])
PY
exit "$status"
