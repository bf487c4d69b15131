#!/usr/bin/env bash
# The GPU checks of issue 4 as one call to a lent device machine (see docs/speed.md, "On a
# GPU"). Two steps:
#
#   here:        benchmarks/device_check.sh stage [BASE]
#                  the wheels the machine's image lacks (MuJoCo, Gymnasium, tyro and their
#                  needs) into .whl/, and BASE's agdrl and benchmarks (default 817205a~1 = c00ac89: before
#                  the sampler's per-step constants moved to the host) into .device_ab/base/;
#                  both folders are excluded from git locally.
#   the device:  command "bash benchmarks/device_check.sh run", carry [".whl", ".device_ab"],
#                timeout_s 540. About 6 minutes on an H200.
#
# What comes back under $OUT (at most 8 files):
#   tests.log              tests/test_devices.py: a CUDA run matches the CPU run from the same
#                          seed; guidance time from CUDA events lies within the chain's
#   before_{1,2}.json      benchmarks/guided_step_profile.py on cuda with BASE's package, and
#   after_{1,2}.json       with this checkout's, alternating (same machine, same call)
#   train_profile.json     benchmarks/train_profile.py: the fast preset's loop on Hopper-v5 on
#                          cuda, seconds per env step split by phase
#   device_check.log       everything printed
set -euo pipefail
cd "$(dirname "$0")/.."  # the repository root, wherever it is started from

stage() {
  local base=${1:-817205a~1} exclude
  exclude=$(git rev-parse --git-path info/exclude)  # a worktree's .git is a file
  grep -qx '/.device_ab/' "$exclude" || echo '/.device_ab/' >>"$exclude"  # .whl/ is ignored
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    mujoco==4.0.0 mujoco-core==4.0.0 glfw==2.11.0 pyopengl==3.1.10 gymnasium==1.4.0 \
    farama-notifications==0.0.6 tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1
  rm -rf .device_ab && mkdir -p .device_ab/base
  git archive "$base" agdrl benchmarks | tar -x -C .device_ab/base
  git rev-parse "$base" >.device_ab/base/COMMIT  # its JSONs' "source" may name the checkout's
  echo "staged: $(ls .whl | wc -l) wheels, agdrl of $(git rev-parse --short "$base") in .device_ab/base"
}

run() {
  : "${OUT:?run this on the device machine, where \$OUT is set}"
  checks 2>&1 | tee "$OUT/device_check.log"
}

# The captured chain (imagination.cuda_graph, agdrl/cuda_graph.py): command
# "bash benchmarks/device_check.sh graph", carry [".whl"], timeout_s 480. Back under $OUT:
#   tests.log               tests/test_devices.py, with the captured chain's tests
#   profile_b1.json         benchmarks/guided_step_profile.py, batch 1, H = 50: the eager
#                           chain's parts and the captured full chain, in one process
#   profile_b512.json       the same at batch 512, H = 10 (imagination's shape)
#   train_profile.json      the fast preset's loop on Hopper-v5 on cuda, eager and captured
#   device_check.log        everything printed
graph() {
  : "${OUT:?run this on the device machine, where \$OUT is set}"
  graph_checks 2>&1 | tee "$OUT/device_check.log"
}

graph_checks() {
  install
  PYTHONPATH=/tmp/site:. timeout 150 python3 -m pytest -q -p no:cacheprovider -p no:jaxtyping \
    tests/test_devices.py 2>&1 | tee "$OUT/tests.log" || true
  PYTHONPATH=/tmp/site:. python3 benchmarks/guided_step_profile.py --device cuda --threads 4 \
    --repeats 40 --out "$OUT/profile_b1.json" || true
  PYTHONPATH=/tmp/site:. python3 benchmarks/guided_step_profile.py --device cuda --threads 4 \
    --repeats 20 --batch 512 --horizon 10 --out "$OUT/profile_b512.json" || true
  PYTHONPATH=/tmp/site:. timeout 200 python3 benchmarks/train_profile.py --env Hopper-v5 \
    --presets fast:device=cuda fast:device=cuda:imagination.cuda_graph=true --steps 200 200 \
    --threads 4 --out "$OUT/train_profile.json" || true
}

install() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 MUJOCO_GL=disable  # no rendering; the image has no EGL
  nvidia-smi -L || true
}

checks() {
  echo "base package: $(cat .device_ab/base/COMMIT)"
  install
  PYTHONPATH=/tmp/site:. python3 -m pytest -q -p no:cacheprovider -p no:jaxtyping \
    tests/test_devices.py 2>&1 | tee "$OUT/tests.log" || true
  for i in 1 2; do
    (cd .device_ab/base && PYTHONPATH=/tmp/site:. python3 benchmarks/guided_step_profile.py \
      --device cuda --threads 4 --repeats 40 --out "$OUT/before_$i.json") || true
    PYTHONPATH=/tmp/site:. python3 benchmarks/guided_step_profile.py --device cuda \
      --threads 4 --repeats 40 --out "$OUT/after_$i.json" || true
  done
  PYTHONPATH=/tmp/site:. timeout 240 python3 benchmarks/train_profile.py --env Hopper-v5 \
    --presets fast:device=cuda --steps 200 --threads 4 --out "$OUT/train_profile.json" || true
}

case "${1:-}" in
  stage) shift; stage "$@" ;;
  run) run ;;
  graph) graph ;;
  *) echo "usage: $0 stage [BASE] | run | graph" >&2; exit 2 ;;
esac
