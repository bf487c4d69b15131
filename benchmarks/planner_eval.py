"""Does planning help? Evaluation return of runs' agents acting with the planner against the
same agents acting with their policy, paired: both arms load the same saved agent and play
the same episodes (the evaluation env is seeded by the run, its resets draw the same start
states whatever the actions). Per task: the paired difference (planner − policy) of each
episode, its mean and a 95% bootstrap interval that resamples seeds, then episodes within
them.

    .venv/bin/python benchmarks/planner_eval.py --runs results/bench/Hopper-v5/polygrad/seed* \\
        --episodes 10 --candidates 64 --horizon 10 --out results/planning/paired_hopper.json

Runs of the ensemble (``mbrl-ensemble`` rows) are the TD-MPC2-style anchor: the same planner,
the same N, H and iterations over the autoregressive model (about the same number of model
calls per decision: ``benchmarks/planner_latency.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from agdrl.cli import load_agent
from agdrl.config import PlannerConfig
from agdrl.provenance import machine_info, source_version


def paired_interval(diffs: list[np.ndarray], reps: int = 10_000, seed: int = 0
                    ) -> tuple[float, float, float]:
    """Mean paired difference over every episode of every seed, and its 95% interval from a
    two-level bootstrap (seeds, then episodes within each drawn seed)."""
    rng = np.random.default_rng(seed)
    means = np.empty(reps)
    for i in range(reps):
        seeds = rng.integers(0, len(diffs), len(diffs))
        means[i] = np.mean(np.concatenate([rng.choice(diffs[s], len(diffs[s])) for s in seeds]))
    return (float(np.mean(np.concatenate(diffs))), float(np.quantile(means, 0.025)),
            float(np.quantile(means, 0.975)))


def evaluate(run: Path, episodes: int, planner: PlannerConfig | None) -> tuple[list[float], float]:
    """Returns of ``episodes`` episodes of the run's agent (with ``planner``, else its policy's
    deterministic action) and the wall-clock seconds they took."""
    model = load_agent(run, None, None)
    try:
        start = time.perf_counter()
        returns = model.evaluate(episodes, planner=model.planner(planner) if planner else None)
        return returns, time.perf_counter() - start
    finally:
        model.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--select", default="best", choices=("best", "mean"))
    parser.add_argument("--denoising-steps", type=int, default=0,
                        help="diffusion candidates in this many DDIM steps (0: the run's sampler)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    planner = PlannerConfig(candidates=args.candidates, horizon=args.horizon,
                            iterations=args.iterations, select=args.select,
                            denoising_steps=args.denoising_steps)
    rows = []
    for run in args.runs:
        policy, policy_s = evaluate(run, args.episodes, None)
        planned, planned_s = evaluate(run, args.episodes, planner)
        config = json.loads((run / "config.json").read_text())
        rows.append({"run": str(run), "task": config["env"], "seed": config["seed"],
                     "world_model": config["world_model"], "policy": policy, "planner": planned,
                     "policy_seconds": policy_s, "planner_seconds": planned_s})
        print(json.dumps({k: rows[-1][k] for k in ("run", "world_model")}
                         | {"policy": float(np.mean(policy)), "planner": float(np.mean(planned))}),
              flush=True)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["world_model"])].append(r)
    summary = []
    for (task, world_model), group in groups.items():
        low_high = paired_interval([np.subtract(r["planner"], r["policy"]) for r in group])
        summary.append({
            "task": task, "world_model": world_model, "seeds": len(group),
            "episodes": sum(len(r["policy"]) for r in group),
            "policy_mean": float(np.mean([np.mean(r["policy"]) for r in group])),
            "planner_mean": float(np.mean([np.mean(r["planner"]) for r in group])),
            "paired_difference": dict(zip(("mean", "low", "high"), low_high, strict=True))})
    for s in summary:
        print(json.dumps(s), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(["benchmarks/planner_eval.py", *sys.argv[1:]]),
        "planner": dataclasses.asdict(planner), "machine": machine_info("cpu"),
        "source": source_version(), "summary": summary, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
