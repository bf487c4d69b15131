#!/usr/bin/env bash
# The committed error-avalanche results (results/avalanche/*): one task at a time, nothing
# else running. Seeds: 0. Usage: benchmarks/avalanche.sh [TASK ...]
set -euo pipefail
cd "$(dirname "$0")/.."
for task in "${@:-Hopper-v5 HalfCheetah-v5}"; do
  for t in $task; do
    out="results/avalanche/$(echo "$t" | tr '[:upper:]' '[:lower:]')"
    .venv/bin/agdrl avalanche --preset default --env "$t" --seed 0 --out-dir "$out" \
      2>&1 | tee "$out.log"
  done
done
