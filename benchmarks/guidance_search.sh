#!/usr/bin/env bash
# The guidance search of docs/guidance.md: every variant's lift in the simulator against
# unguided imagination, from one training run's checkpoint (benchmarks/guidance_lift.py
# --run-dir), on the run's own few-step sampler and on 8-step DDIM and 128-step DDPM.
#   benchmarks/guidance_search.sh RUN_DIR OUT_PREFIX [extra guidance_lift.py options]
# writes OUT_PREFIX-ddim2/, OUT_PREFIX-ddim8/, OUT_PREFIX-ddpm128/ (results.json, SUMMARY.md).
set -euo pipefail
cd "$(dirname "$0")/.."
run=$1 out=$2
shift 2
PY=${PYTHON:-.venv/bin/python}
doses() { local name=$1 mode=$2; shift 2; for c in "$@"; do echo "$name:$mode:$c"; done; }
gradient=(
  $(doses sag sigma4 0.4 4 40 400 4000) $(doses eag sigma4 0.4 4 40 400 4000)
  $(doses sag normalized 0.01 0.1 1 10) $(doses eag normalized 0.01 0.1 1 10)
  $(doses sag total 0.01 0.1 1 10) $(doses eag total 0.01 0.1 1 10)
  $(doses sag+first total 0.1 1 10) $(doses eag+first total 0.1 1 10)
  $(doses sag+last total 0.1 1) $(doses eag+last total 0.1 1)
  $(doses sag@gae total 0.1 1) $(doses eag@gae total 0.1 1)
  $(doses reward total 0.1 1 10)
)
resample=(
  $(doses sag resample 0.3:4 1:4 3:4 10:4 3:8) $(doses eag resample 0.3:4 1:4 3:4 10:4 3:8)
  eag@gae:resample:3:4 reward:resample:3:4
)
"$PY" benchmarks/guidance_lift.py --run-dir "$run" --samplers ddim:2:trailing \
  --variants none "${gradient[@]}" "${resample[@]}" --out "$out-ddim2" "$@"
"$PY" benchmarks/guidance_lift.py --run-dir "$run" --samplers ddim:8 \
  --variants none "${gradient[@]}" --out "$out-ddim8" "$@"
"$PY" benchmarks/guidance_lift.py --run-dir "$run" --samplers ddpm:128 \
  --variants none $(doses sag sigma4 4 400) $(doses sag normalized 0.1 1) \
  $(doses sag total 0.1 1 10) $(doses eag total 0.1 1 10) $(doses sag+first total 1 10) \
  --out "$out-ddpm128" "$@"
