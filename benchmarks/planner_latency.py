"""Latency of one decision of the planner (agdrl.planning.Planner), and the world-model calls
it makes, for the diffusion world model and the autoregressive ensemble.

Each case is timed on one observation of the task (a warm-started planner, as during an
episode): the median over ``--repeats`` decisions after one warm-up. The agents are those of
a run (``--diffusion-run``, ``--ensemble-run``: a run directory or saved model) or, when none is
given, fresh agents of the ``fast`` preset (the latency does not depend on the weights).
Model calls count the forward passes of the denoiser (each on all candidates' segments at
once) or of the ensemble (each one step of all candidates). Run nothing else meanwhile.

    .venv/bin/python benchmarks/planner_latency.py --env Hopper-v5 \\
        --out results/planning/latency_cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from agdrl import AGDMBRL, PRESETS
from agdrl.cli import load_agent
from agdrl.config import PlannerConfig
from agdrl.provenance import machine_info, source_version

sys.path.insert(0, str(Path(__file__).parent))
from common import timed

CASES = {
    "N64-H10": PlannerConfig(candidates=64, horizon=10),
    "N64-H50": PlannerConfig(candidates=64, horizon=50),
    "N64-H10-mppi3": PlannerConfig(candidates=64, horizon=10, iterations=3),
    "N64-H10-unguided": PlannerConfig(candidates=64, horizon=10, guided=False),
    "N256-H10": PlannerConfig(candidates=256, horizon=10),
    "N64-H10-ddim1": PlannerConfig(candidates=64, horizon=10, denoising_steps=1),
    "N64-H10-ddim1-unguided": PlannerConfig(candidates=64, horizon=10, denoising_steps=1,
                                            guided=False),
    "N64-H50-ddim1": PlannerConfig(candidates=64, horizon=50, denoising_steps=1),
}
"""Planner settings timed for each world model (N candidates, H actions, MPPI iterations, the
diffusion model's denoising steps per segment: the ensemble does not denoise, so its rows
that differ only in that are not timed)."""


def agent(run: Path | None, env: str, world_model: str, device: str) -> AGDMBRL:
    if run is not None:
        return load_agent(run, None, device)
    cfg = PRESETS["fast"]
    if world_model == "ensemble":
        cfg = dataclasses.replace(cfg, world_model="ensemble", imagination=dataclasses.replace(
            cfg.imagination, guidance="none"))
    return AGDMBRL(env, dataclasses.replace(cfg, device=device))


def counted(network: torch.nn.Module) -> tuple[list[int], list]:
    """A call counter on the modules that run the model: the denoisers (teacher, EMA copy,
    student) of a diffusion model, else the network itself."""
    count = [0]
    modules = ([network.diffusion.denoiser, network.ema.model, network.student]
               if hasattr(network, "ema") else [network])
    handles = [m.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
               for m in modules if m is not None]
    return count, handles


def measure(model: AGDMBRL, name: str, cfg: PlannerConfig, repeats: int) -> dict:
    planner = model.planner(cfg)
    obs, _ = model.eval_env.reset(seed=0)
    cuda = torch.device(model.cfg.device).type == "cuda"

    def decide() -> None:
        planner(obs)
        if cuda:
            torch.cuda.synchronize()

    seconds = timed(decide, repeats)
    count, handles = counted(model.world_model.network)
    planner(obs)
    for h in handles:
        h.remove()
    return {"case": name, "world_model": model.cfg.world_model, **dataclasses.asdict(cfg),
            "ms_per_decision": 1000 * seconds, "model_calls_per_decision": count[0],
            "sampler": f"{model.cfg.imagination.sampler}:{model.cfg.imagination.sampler_steps}",
            "segment_steps": model.world_model.segment_steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--diffusion-run", type=Path)
    parser.add_argument("--ensemble-run", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for world_model, run in (("diffusion", args.diffusion_run), ("ensemble", args.ensemble_run)):
        model = agent(run, args.env, world_model, args.device)
        for name in args.cases:
            if world_model == "ensemble" and CASES[name].denoising_steps:
                continue
            rows.append(measure(model, name, CASES[name], args.repeats))
            print(json.dumps({k: rows[-1][k] for k in ("case", "world_model", "ms_per_decision",
                                                       "model_calls_per_decision")}), flush=True)
        model.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(["benchmarks/planner_latency.py", *sys.argv[1:]]),
        "env": args.env, "threads": args.threads, "repeats": args.repeats,
        "machine": machine_info(args.device), "source": source_version(), "rows": rows},
        indent=1))


if __name__ == "__main__":
    main()
