#!/usr/bin/env bash
# Learning curves of AGD-MBRL (fast preset) on a task over seeds and guidance variants.
# Each run writes its run directory (config.json, evaluations.csv, train_metrics.csv) under
# results/learning/TASK/GUIDANCE-seedS; runs go PARALLEL at a time with one torch thread each.
#
#   benchmarks/learning_curves.sh TASK STEPS "GUIDANCES" "SEEDS" [-- extra agdrl train args]
#   e.g. benchmarks/learning_curves.sh InvertedPendulum-v5 10000 "sag" "0 1 2"
#
# Then: .venv/bin/python benchmarks/plot_learning.py results/learning/TASK
set -euo pipefail
cd "$(dirname "$0")/.."
task=$1 steps=$2 guidances=$3 seeds=$4
shift 4
[ "${1:-}" = "--" ] && shift
PARALLEL=${PARALLEL:-2}
out=results/learning/$(echo "$task" | tr '[:upper:]' '[:lower:]')
mkdir -p "$out"
export OUT="$out" TASK="$task" STEPS="$steps" EXTRA="$*"
for g in $guidances; do
  for s in $seeds; do
    echo "$g $s"
  done
done | OMP_NUM_THREADS=1 xargs -P "$PARALLEL" -L 1 bash -c '
  run="$OUT/$0-seed$1"
  if [ -f "$run/model/config.json" ]; then echo "done already: $run"; exit 0; fi
  rm -rf "$run"
  # shellcheck disable=SC2086  # EXTRA holds several arguments
  .venv/bin/agdrl train --preset fast --env "$TASK" --guidance "$0" --seed "$1" \
    --total-steps "$STEPS" --run-dir "$run" $EXTRA > "$run.log" 2>&1 \
    && echo "finished: $run" || echo "FAILED: $run (see $run.log)"
'
