"""Do imagined segments vary as much as real ones from the same start?

For each of ``--starts`` buffer states of a finished run, draw ``--draws`` imagined segments
with the run's world model and policy under each sampler, and as many real closed-loop
rollouts of the same policy (sampled actions) from the restored simulator state. At every
step t of the segment it compares, per start, the spread over the draws (standard deviation
of each state dimension in units of the buffer's state std, averaged over dimensions) and the
draws' mean. A sampler whose segments are too alike (spread ratio < 1) gives the agent less
variety to learn from than the simulator would, even at a small dynamics error.

    .venv/bin/python benchmarks/imagination_variety.py \\
        --run-dir results/speed_vs_return/Hopper-v5/agd-sag/seed0 \\
        --out results/diagnosis/imagination-variety-hopper-v5-fast-seed0.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from agdrl import AGDMBRL
from agdrl.envs import set_sim_state
from agdrl.imagination import Imagination
from agdrl.provenance import machine_info, source_version

sys.path.insert(0, str(Path(__file__).parent))
from common import with_sampler


def real_rollouts(run: AGDMBRL, sim_state: np.ndarray, draws: int, horizon: int,
                  rng: np.random.Generator) -> np.ndarray:
    """States (draws, horizon, ds) of closed-loop rollouts of the run's policy with sampled
    actions from ``sim_state``; NaN after a termination."""
    env, actor = run.env, run.agent.actor
    out = np.full((draws, horizon, run.world_model.network.obs_dim), np.nan, np.float32)
    for m in range(draws):
        env.reset()
        obs = set_sim_state(env, sim_state)
        out[m, 0] = obs
        for t in range(1, horizon):
            with torch.no_grad():
                mean, std = actor(torch.as_tensor(obs, dtype=torch.float32)[None])
                eps = torch.as_tensor(rng.standard_normal(mean.shape), dtype=torch.float32)
                action = actor.squash(mean + std * eps)[0].numpy()
            obs, _, terminated, _, _ = env.step(action)
            out[m, t] = obs
            if terminated:
                break
    return out


def spread_and_bias(imagined: np.ndarray, real: np.ndarray, state_std: np.ndarray) -> dict:
    """imagined, real: (starts, draws, H, ds) -> per-step mean spreads (steps 1 … H-1) over
    the draws, their ratio, and the normalized distance of the draws' means."""
    def spread(x: np.ndarray) -> np.ndarray:  # (H,)
        return np.nanmean(np.nanstd(x / state_std, axis=1), axis=(0, 2))

    imagined_spread, real_spread = spread(imagined)[1:], spread(real)[1:]
    bias = np.nanmean(np.abs(np.nanmean(imagined, 1) - np.nanmean(real, 1)) / state_std,
                      axis=(0, 2))[1:]
    return {"imagined_spread_per_step": imagined_spread.tolist(),
            "real_spread_per_step": real_spread.tolist(),
            "spread_ratio": float(imagined_spread.mean() / real_spread.mean()),
            "mean_bias_per_step": bias.tolist(), "mean_bias": float(bias.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samplers", nargs="+", default=["ddim:8", "ddim:16", "ddpm:8",
                                                          "ddpm:128"])
    parser.add_argument("--starts", type=int, default=64)
    parser.add_argument("--draws", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = AGDMBRL.resume(args.run_dir)
    model, buffer = run.world_model.network, run.buffer
    if buffer.sim_states is None:
        raise SystemExit("the run's buffer holds no simulator states to restore")
    horizon = model.cfg.horizon
    rng = np.random.default_rng(args.seed)
    starts = rng.choice(buffer.size, size=args.starts, replace=False)
    state_std = buffer.obs[: buffer.size].std(0) + 1e-6
    real = np.stack([real_rollouts(run, buffer.sim_states[i], args.draws, horizon, rng)
                     for i in starts])
    s0 = torch.as_tensor(np.repeat(buffer.obs[starts], args.draws, 0))
    rows = []
    for spec in args.samplers:
        icfg = with_sampler(run.cfg.imagination, spec, batch_size=len(s0))
        imagination = Imagination(model, run.agent, icfg, run.world_model.reward_model,
                                  run.world_model.termination_model)
        seg, _ = imagination(s0, torch.Generator().manual_seed(args.seed))
        imagined = seg.states.numpy().reshape(args.starts, args.draws, horizon, -1)
        row = {"sampler": spec, **spread_and_bias(imagined, real, state_std)}
        rows.append(row)
        print(f"{spec:9s} spread ratio {row['spread_ratio']:.3f}  mean bias "
              f"{row['mean_bias']:.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "benchmarks/imagination_variety.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(), "source": source_version(), "run": str(args.run_dir),
        "starts": args.starts, "draws": args.draws, "horizon": horizon, "rows": rows},
        indent=1))


if __name__ == "__main__":
    main()
