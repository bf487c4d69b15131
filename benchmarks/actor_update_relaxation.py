"""One actor-critic update on segments imagined with the policy guidance before 2026-11-27
(relaxation β = 1, no settle steps) and with the current defaults (β = 0.5, 4 settle steps),
from a run's newest checkpoint, the same start states and generator seed: the actions'
standardized RMS at the segments' own states, the actor's gradient norm and the step its line
search lets through.

    .venv/bin/python benchmarks/actor_update_relaxation.py \\
        --run-dir results/before_relaxation/Hopper-v5/agd-sag/seed0 \\
        --out results/diagnosis/actor-update-relaxation-hopper-v5-15k-seed0.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from agdrl import AGDMBRL
from agdrl.provenance import machine_info

SETTINGS = {"before (β 1, settle 0)": (1.0, 0), "now (β 0.5, settle 4)": (0.5, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--starts", type=int, default=256)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = AGDMBRL.resume(args.run_dir)  # with the optimizers' state, as training had it
    starts = np.random.default_rng(args.seed).integers(0, run.buffer.size, args.starts)
    imagination, rows = run.world_model.imagination, []
    for name, (beta, settle) in SETTINGS.items():
        imagination.policy.relaxation = beta
        imagination.sampler = dataclasses.replace(imagination.sampler, settle_steps=settle)
        seg, metrics = imagination(torch.as_tensor(run.buffer.obs[starts]),
                                   torch.Generator().manual_seed(args.seed))
        update = copy.deepcopy(run.agent).update(seg)
        rows.append({"setting": name, "policy_relaxation": beta, "settle_steps": settle,
                     "action_z_rms": metrics["action_z_rms"],
                     **{k: update[k] for k in ("actor_grad_norm", "actor_step_scale",
                                               "logp_change", "critic_loss")}})
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "benchmarks/actor_update_relaxation.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(), "env_steps": run.num_timesteps, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
