#!/usr/bin/env bash
# Learning curves of AGD-MBRL (fast preset) over tasks, seeds and guidance variants.
# Each run writes its run directory (config.json, evaluations.csv, train_metrics.csv) under
# results/learning/TASK/GUIDANCE-seedS; runs go PARALLEL at a time with one torch thread each,
# from one queue (so long and short runs share the slots). Finished runs are skipped.
#
#   benchmarks/learning_curves.sh TASK STEPS "GUIDANCES" "SEEDS" [-- extra agdrl train args]
#   benchmarks/learning_curves.sh --queue FILE [-- extra agdrl train args]
#       (FILE: one run per line, "TASK STEPS GUIDANCE SEED"; # starts a comment)
#   e.g. benchmarks/learning_curves.sh InvertedPendulum-v5 10000 "sag" "0 1 2"
#
# Then: .venv/bin/python benchmarks/plot_learning.py results/learning/TASK
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$1" = "--queue" ]; then
  runs=$(grep -v '^\s*\(#\|$\)' "$2")
  shift 2
else
  task=$1 steps=$2 guidances=$3 seeds=$4
  shift 4
  runs=$(for g in $guidances; do for s in $seeds; do echo "$task $steps $g $s"; done; done)
fi
[ "${1:-}" = "--" ] && shift
PARALLEL=${PARALLEL:-2}
export EXTRA="$*"
echo "$runs" | OMP_NUM_THREADS=1 xargs -P "$PARALLEL" -L 1 bash -c '
  task=$0 steps=$1 guidance=$2 seed=$3
  out=results/learning/$(echo "$task" | tr "[:upper:]" "[:lower:]")
  run="$out/$guidance-seed$seed"
  mkdir -p "$out"
  if [ -f "$run/model/config.json" ]; then echo "done already: $run"; exit 0; fi
  rm -rf "$run"
  # shellcheck disable=SC2086  # EXTRA holds several arguments
  .venv/bin/agdrl train --preset fast --env "$task" --guidance "$guidance" --seed "$seed" \
    --total-steps "$steps" --run-dir "$run" $EXTRA > "$run.log" 2>&1 \
    && echo "finished: $run" || echo "FAILED: $run (see $run.log)"
'
