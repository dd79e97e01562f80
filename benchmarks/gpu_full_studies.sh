#!/usr/bin/env bash
# The course study and the bypass table at their `full` budgets (the publications' settings) on a
# lent GPU machine, as one command with a hard deadline (issue 17: "when a GPU is available, run
# the full budget of the course study and the bypass table on it and record it").
#
#   OUT=results_dir bash benchmarks/gpu_full_studies.sh
#
# Run 2026-12-04 on one H200 (the device tool, `carry: [.gpu]`) as
#   DEADLINE_S=390 STUDY_JOBS=8 bash benchmarks/gpu_full_studies.sh
# -> benchmarks/results/studies/course_table1_full_h200.json and gpu_full_studies_h200.log; then,
# in a second session, the ten cut cells with STUDY_IMPORT (below), DEADLINE_S=565 STUDY_JOBS=10,
# and again at once (DEADLINE_S=245, no import: WORK_DIR still held the first call's
# checkpoints, so each cut cell resumed) -> bypass_full_h200.json and gpu_full_studies_h200_b.log.
#
# Such a machine starts bare, with its own Python and PyTorch, no network and no ../shared, and
# is lent for minutes. So this script
#   - takes the CIFAR-10 JPEGs from a tar.xz carried beside the checkout (DATA_ARCHIVE; made here
#     with `tar -C ../shared/data -cf - cifar10-jpeg | xz -9 > .gpu/cifar10-jpeg.tar.xz`,
#     18.6 MB: 60,000 JPEGs share their headers) where ../shared is not there;
#   - runs squeezelab from the checkout (PYTHONPATH), not installed;
#   - runs both recipes as one pool of JOBS workers (`study --jobs`): the course study's cells
#     come first, so they are the ones that finish if the deadline cuts the bypass table short;
#   - at DEADLINE_S seconds sends the pool one Ctrl-C (every running cell saves and the finished
#     ones are merged), and copies each study's results JSON, the log and the machine's
#     description into $OUT.
# STUDY_IMPORT (space-separated results JSONs, such as the ones an earlier GPU session recorded)
# imports their finished cells first (`study --import`), so only the rest runs, as the second
# 2026-12-04 session did with
#   STUDY_IMPORT=benchmarks/results/studies/course_table1_full_h200.json DEADLINE_S=565 \
#   STUDY_JOBS=10 bash benchmarks/gpu_full_studies.sh
# A call cut by its deadline leaves each running cell's checkpoint in WORK_DIR: the same command
# again on the same machine (still warm) resumes them.
# STUDY_BUDGET=smoke runs the same path in a minute on any machine (how it is checked on a CPU);
# STUDY_RECIPES (space-separated) runs other recipes the same way; CIFAR10_JPEG names the copy to
# use instead of ../shared's (a folder that is not there makes the script unpack the archive).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
: "${OUT:?set OUT to the folder the results go to}"
BUDGET="${STUDY_BUDGET:-full}"
JOBS="${STUDY_JOBS:-8}"
DEADLINE_S="${DEADLINE_S:-470}"
ARCHIVE="${DATA_ARCHIVE:-.gpu/cifar10-jpeg.tar.xz}"
PY="${PYTHON:-python3}"
WORK="${WORK_DIR:-/tmp/gpu_full_studies}"
read -r -a RECIPES <<< "${STUDY_RECIPES:-recipes/studies/course_table1.yaml recipes/studies/bypass.yaml}"
SHARED_JPEG="${CIFAR10_JPEG:-../shared/data/cifar10-jpeg}"

# shellcheck source=benchmarks/gpu_setup.sh
source "$ROOT/benchmarks/gpu_setup.sh"

# cells finished elsewhere: each results JSON into the study it names, before the pool starts
read -r -a IMPORTS <<< "${STUDY_IMPORT:-}"
for results in "${IMPORTS[@]}"; do
  study=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["study"])' "$results") \
    || { echo "STUDY_IMPORT: $results is not a readable results JSON" >&2; exit 2; }
  recipe=""
  for r in "${RECIPES[@]}"; do
    [ "$("$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["study"])' "$r")" = "$study" ] \
      && recipe="$r"
  done
  [ -n "$recipe" ] || { echo "STUDY_IMPORT: $results holds study $study, which none of the recipes run (${RECIPES[*]})" >&2; exit 2; }
  "$PY" -m squeezelab study "$recipe" --budget "$BUDGET" --out-root "$WORK/studies" \
    --import "$results" --merge 2>&1 | tee -a "$OUT/study.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || exit 2
done

left=$(( DEADLINE_S - ($(date +%s) - start) ))
[ "$left" -ge 10 ] || { echo "only $left s left of DEADLINE_S=$DEADLINE_S: nothing run" >&2; exit 3; }
timeout -s INT -k 90 "$left" "$PY" -m squeezelab study "${RECIPES[@]}" --budget "$BUDGET" \
  --jobs "$JOBS" --out-root "$WORK/studies" 2>&1 | tee "$OUT/study.log"
status=${PIPESTATUS[0]}
echo "study exit status $status after $(( $(date +%s) - start )) s" | tee -a "$OUT/study.log"

# The pool merges when it ends or is interrupted, but not when `timeout -k` had to kill it:
# merge whatever finished, then copy.
for recipe in "${RECIPES[@]}"; do
  "$PY" -m squeezelab study "$recipe" --budget "$BUDGET" --out-root "$WORK/studies" --merge \
    > /dev/null 2>&1 || echo "no results to merge for $recipe" | tee -a "$OUT/study.log"
done
for results in "$WORK"/studies/*/"$BUDGET"/results.json; do
  [ -f "$results" ] || continue
  study=$(basename "$(dirname "$(dirname "$results")")")
  cp "$results" "$OUT/${study}_${BUDGET}.json"
done
ls -la "$OUT"
exit "$status"
