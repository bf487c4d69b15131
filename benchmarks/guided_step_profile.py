"""Where one guided trajectory's time goes, on a CPU or a GPU.

One guided imagination of ``--batch`` segments of H = ``--horizon`` with the fast preset's
sampler (DDIM, ``--steps`` steps), SAG state guidance and policy guidance ('sample'), split
by timing the same call with parts switched off or swapped (medians of ``--repeats`` calls):

  denoiser   model.sample with no hook (the network calls and the sampler's arithmetic);
  policy     + policy guidance (the actor at every step's predicted states);
  unguided   the imagination call with policy guidance only (PolyGRAD's: settle step and
             relabelling included);
  full       + SAG state guidance (a critic backward pass per step);
  actions    SAG through the actions instead (total mode, c = 1: a denoiser and critic
             backward pass per step);
  full_cuda_graph  (CUDA only) the full chain captured in a CUDA graph and replayed
             (``imagination.cuda_graph``; the untimed warm-up call captures it).

Then one full call runs under torch.profiler: operator calls and kernel launches per
trajectory, the operators with the most self CPU time, and on CUDA every host-device
synchronization with the source line that caused it (``torch.cuda.set_sync_debug_mode``).
At batch 1 a GPU is bound by these per-operator costs, not by arithmetic, so the counts say
what to cut. The weights are random (the fast preset's 512 × 4 MLP at Hopper-v5's sizes): the
cost does not depend on them.

    .venv/bin/python benchmarks/guided_step_profile.py --device cpu \\
        --out results/speed/guided_step_profile_cpu.json
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from agdrl import PRESETS
from agdrl.a2c import ActorCriticAgent
from agdrl.config import ActorCriticConfig, ImaginationExperiments
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.imagination import Imagination
from agdrl.provenance import machine_info, source_version

sys.path.insert(0, str(Path(__file__).parent))
from common import timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--horizon", type=int, default=50)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--obs-dim", type=int, default=11, help="Hopper-v5's")
    parser.add_argument("--action-dim", type=int, default=3, help="Hopper-v5's")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    fast = PRESETS["fast"]
    model = DiffusionWorldModel(args.obs_dim, args.action_dim,
                                dataclasses.replace(fast.diffusion, horizon=args.horizon), device)
    agent = ActorCriticAgent(args.obs_dim, -np.ones(args.action_dim), np.ones(args.action_dim),
                             ActorCriticConfig(), device)
    # one trajectory of H states: no chaining
    icfg = dataclasses.replace(fast.imagination, batch_size=args.batch, segments=1,
                               sampler_steps=args.steps, guidance="sag",
                               policy_guidance="sample")
    full = Imagination(model, agent, icfg)
    unguided = Imagination(model, agent, dataclasses.replace(icfg, guidance="none"))
    actions = Imagination(model, agent, dataclasses.replace(
        icfg, guidance_mode="total", guidance_scale=1.0,
        experimental=ImaginationExperiments(guide_actions=True)))
    sampler = full.sampler
    starts = torch.randn(args.batch, args.obs_dim, device=device)
    gen = torch.Generator().manual_seed(0)
    variants = {"denoiser": lambda: model.sample(starts, sampler, generator=gen),
                "policy": lambda: model.sample(starts, sampler, hook=full.policy, generator=gen),
                "unguided": lambda: unguided(starts, gen),
                "full": lambda: full(starts, gen),
                "actions": lambda: actions(starts, gen)}
    if device.type == "cuda":  # the full chain captured once and replayed (agdrl.cuda_graph)
        graphed = Imagination(model, agent, dataclasses.replace(icfg, cuda_graph=True))
        variants["full_cuda_graph"] = lambda: graphed(starts)
    def synchronized(call):
        def run() -> None:
            call()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run

    seconds = {name: timed(synchronized(call), args.repeats) for name, call in variants.items()}

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    with profile(activities=activities) as prof:
        full(starts, gen)
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    count = {e.key: e.count for e in events}
    launches = sum(n for key, n in count.items() if "LaunchKernel" in key)
    operators = sum(n for key, n in count.items() if key.startswith("aten::"))
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]

    syncs: collections.Counter[str] = collections.Counter()
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            full(starts, gen)
        torch.cuda.set_sync_debug_mode("default")
        syncs.update(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                     if "synchroniz" in str(w.message))

    result = {
        "command": "benchmarks/guided_step_profile.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "machine": machine_info(device),
        "source": source_version(),
        "grid": sampler.grid(model.cfg.num_steps),
        "seconds": seconds,
        "ms_per_step": {k: 1000 * v / args.steps for k, v in seconds.items()},
        "aten_operator_calls": operators, "kernel_launches": launches,
        "synchronizations": dict(syncs.most_common()),
        "top_self_cpu": [{"op": e.key, "calls": e.count,
                          "self_cpu_ms": e.self_cpu_time_total / 1000} for e in top]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{args.device}: batch {args.batch}, H = {args.horizon}, {args.steps} DDIM steps")
    for name, value in seconds.items():
        print(f"  {name:15s} {1000 * value:8.2f} ms  ({1000 * value / args.steps:.2f} ms/step)")
    print(f"  {operators} aten operator calls, {launches} kernel launches, "
          f"{sum(syncs.values())} synchronizations per trajectory")
    for site, n in syncs.most_common():
        print(f"    sync {n:3d}× at {site}")
    for e in top:
        print(f"  {e.key:40s} {e.count:5d} calls {e.self_cpu_time_total / 1000:8.2f} ms self CPU")


if __name__ == "__main__":
    main()
