"""Where the time of one guided imagination goes (issue: fast imagination, item 2).

On a trained world model (an avalanche run's ``diffusion.safetensors``) and the fast preset's
imagination (DDIM-8, SAG, sampled actions), in one run:
  1. the per-step fixed cost: seconds per denoising step at batch 1, 8, 64 and 512; at batch 1
     the arithmetic is negligible, so that time is the Python and dispatch overhead that every
     batch pays;
  2. the split of a batch-512 imagination into the denoiser's forward passes (the same chain
     without any hook), policy guidance (sampled actions: one actor forward per step) and
     state guidance (one critic backward per step);
  3. the top functions of a cProfile of one batch-512 imagination, by own time;
  4. torch.compile of the denoiser (inductor, default mode): compile seconds, then the same
     timings as 1 at batch 1 and 512, against eager in the same process.
Every figure is a median over ``--repeats`` calls after a warm-up; run nothing else meanwhile.

    .venv/bin/python benchmarks/imagination_overhead.py --source results/avalanche/hopper-v5 \\
        --env Hopper-v5 --out results/speed/imagination_overhead_hopper_cpu.json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

from agdrl.a2c import ActorCriticAgent
from agdrl.buffer import ReplayBuffer
from agdrl.config import ActorCriticConfig, ImaginationConfig
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.envs import make_env
from agdrl.imagination import Imagination
from agdrl.provenance import machine_info

sys.path.insert(0, str(Path(__file__).parent))
from sampling import timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = DiffusionWorldModel.load(args.source / "diffusion.safetensors")
    buffer = ReplayBuffer.load(args.source / "train_buffer.npz")
    space = make_env(args.env).action_space
    agent = ActorCriticAgent(model.obs_dim, space.low, space.high, ActorCriticConfig())
    agent.update_normalizers(buffer.obs[: buffer.size])
    rng = np.random.default_rng(0)
    starts = torch.as_tensor(buffer.obs[rng.integers(0, buffer.size, 512)])
    gen = torch.Generator().manual_seed(0)

    def imagination(guidance: str, batch: int) -> Imagination:
        return Imagination(model, agent, ImaginationConfig(
            batch_size=batch, sampler="ddim", sampler_steps=args.steps, guidance=guidance))

    def run(batch: int, guidance: str = "sag"):
        im = imagination(guidance, batch)
        return lambda: im(starts[:batch], gen)

    result: dict = {"per_step_seconds": {}, "split_batch_512": {}}
    for batch in (1, 8, 64, 512):
        result["per_step_seconds"][str(batch)] = timed(run(batch), args.repeats) \
            / args.steps
    sampler = model.default_sampler("ddim", args.steps)
    chain_only = timed(lambda: model.sample(starts, sampler, generator=gen),
                                args.repeats)
    policy_only = timed(run(512, "none"), args.repeats)
    full = timed(run(512), args.repeats)
    result["split_batch_512"] = {
        "denoiser_chain_s": chain_only, "policy_guidance_s": policy_only - chain_only,
        "state_guidance_s": full - policy_only, "guided_imagination_s": full}
    profile = cProfile.Profile()
    fn = run(512)
    profile.enable()
    fn()
    profile.disable()
    stats = pstats.Stats(profile)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    result["profile_top_own_time"] = [
        {"function": f"{Path(f).name}:{line}:{name}", "calls": calls, "own_s": own,
         "cumulative_s": cum} for (f, line, name), (_, calls, own, cum, _) in rows]
    if not args.no_compile:
        eager = {b: result["per_step_seconds"][str(b)] for b in (1, 512)}
        start = time.perf_counter()
        model.ema.model = torch.compile(model.ema.model)
        run(512)()  # compiles
        run(1)()  # and for batch 1 (a new shape)
        compile_s = time.perf_counter() - start
        compiled = {b: timed(run(b), args.repeats) / args.steps for b in (1, 512)}
        result["torch_compile"] = {"compile_s": compile_s,
                                   "per_step_seconds_eager": eager,
                                   "per_step_seconds_compiled": compiled,
                                   "speedup": {b: eager[b] / compiled[b] for b in (1, 512)}}
    result.update(command="benchmarks/imagination_overhead.py " + " ".join(sys.argv[1:]),
                  machine=machine_info())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "profile_top_own_time"},
                     indent=1))
    for row in result["profile_top_own_time"][:10]:
        print(f"{row['own_s']:8.4f} s own {row['cumulative_s']:8.4f} s cum "
              f"{row['calls']:6d}× {row['function']}")


if __name__ == "__main__":
    main()
