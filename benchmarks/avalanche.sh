#!/usr/bin/env bash
# The committed error-avalanche results (results/avalanche/<task>/): one task at a time, with
# nothing else running. Seed 0. Usage: benchmarks/avalanche.sh [TASK ...] [-- extra options]
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do tasks+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#tasks[@]} -eq 0 ] && tasks=(Hopper-v5 HalfCheetah-v5)
mkdir -p results/avalanche
for t in "${tasks[@]}"; do
  out="results/avalanche/$(echo "$t" | tr '[:upper:]' '[:lower:]')${SUFFIX:-}"
  .venv/bin/agdrl avalanche default --env "$t" --seed 0 --out-dir "$out" "$@" \
    2>&1 | tee "$out.log"
done
