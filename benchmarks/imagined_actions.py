"""Are the imagined actions samples of the policy?

The actor-critic's gradient is on-policy: it needs the actions of an imagined segment to be
draws from π(· | ŝ_t) at the segment's own states. For actions a_t with pre-squash u_t =
atanh(a_t), the standardized actions z = (u_t − μ(ŝ_t)) / σ(ŝ_t) of true samples are N(0, I):
mean 0, RMS 1, and |z| > 2.5 for 1.2% of the entries. This script measures z on imagined
segments from real start states for each policy-guidance mode ('sample', 'pull', and
'resample': 'sample' with the actions drawn again at the final states), each 'sample' setting
of relaxation β and settle steps (``--settle``), and sampler, with the run's trained policy and
with a freshly initialized one, together with the dynamics error of the segments against the
simulator replaying their actions (so a mode that fixes the actions but breaks the dynamics
would show), the error of their rewards, their discounted return (imagined and replayed) and
how often they terminate (imagined and replayed).

Starts from a training run with a checkpoint (``agdrl train … --checkpoint-every N``). The
'pull' rows first tune δ online for ``--tune-batches`` batches, as training does.

    .venv/bin/python benchmarks/imagined_actions.py --run-dir RUN_DIR \\
        --out results/diagnosis/imagined-actions-reacher-v5.json
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

from agdrl import AGDMBRL
from agdrl.a2c import ActorCriticAgent
from agdrl.buffer import ReplayBuffer
from agdrl.config import ImaginationExperiments
from agdrl.imagination import Imagination
from agdrl.provenance import machine_info
from agdrl.segments import Segment
from agdrl.termination import TerminationModel

sys.path.insert(0, str(Path(__file__).parent))
from common import with_sampler
from guidance_lift import evaluate_variant

SEGMENT_FIELDS = ("dynamics_error", "reward_error", "imagined_return", "replayed_return",
                  "imagined_termination", "replayed_termination")
"""What each row keeps of :func:`guidance_lift.evaluate_variant`: the segments' accuracy
against the simulator replaying their actions, and what the critic would learn from them."""

NORMAL_TAIL_2_5 = 0.0124
"""P(|z| > 2.5) for z ~ N(0, 1)."""


def standardized_actions(seg: Segment, agent: ActorCriticAgent) -> torch.Tensor:
    """z = (atanh(a_t) − μ(ŝ_t)) / σ(ŝ_t) for t < H − 1 (the actions that drive a
    transition): (B, H − 1, da)."""
    with torch.no_grad():
        mean, std = agent.actor(seg.states[:, :-1])
        return (agent.actor.unsquash(seg.actions[:, :-1]) - mean) / std


def z_stats(z: torch.Tensor) -> dict:
    return {"z_mean_per_dim": z.mean((0, 1)).tolist(), "z_rms": float(z.pow(2).mean().sqrt()),
            "z_std": float(z.std()), "tail_fraction_2.5": float((z.abs() > 2.5).float().mean())}


class Recorder:
    """Wraps an Imagination and keeps the last segment it produced."""

    def __init__(self, imagination: Imagination):
        self.imagination, self.segment = imagination, None

    def __call__(self, starts: torch.Tensor, generator: torch.Generator):
        self.segment, metrics = self.imagination(starts, generator)
        return self.segment, metrics


def fit_termination_classifier(buffer: ReplayBuffer, steps: int, rng: np.random.Generator
                               ) -> TerminationModel:
    """A termination classifier trained on the buffer's transitions as training trains it
    (normalizers from every transition, batches of 256), for ``steps`` steps."""
    n = buffer.size
    head = TerminationModel(buffer.obs_dim, buffer.action_dim)
    head.update_normalizers(buffer.obs[:n], buffer.actions[:n], buffer.rewards[:n])
    for step in range(steps):
        loss = head.train_step(buffer.sample_transitions(256, rng))
        if step % 1000 == 0 or step == steps - 1:
            print(f"termination classifier step {step}: loss {loss:.4f}", flush=True)
    return head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samplers", nargs="+", default=["ddim:8", "ddpm:8", "ddpm:32"])
    parser.add_argument("--modes", nargs="+", default=["sample", "pull"])
    parser.add_argument("--settle", nargs="+", default=["0.5:4"], metavar="BETA:STEPS",
                        help="'sample' and 'resample' rows for each policy_relaxation β and "
                        "settle_steps pair (1:0 is the chain before 2026-11-27)")
    parser.add_argument("--starts", type=int, default=256)
    parser.add_argument("--tune-batches", type=int, default=30)
    parser.add_argument("--termination-classifier-steps", type=int, default=0,
                        help="also rows whose terminal flags come from a termination classifier "
                        "fitted to the run's replay buffer for this many steps (0: none)")
    parser.add_argument("--policy-run", type=Path,
                        help="take the trained agent (policy and critic) from this run instead "
                        "(same task and agent sizes), to compare world models under one policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = AGDMBRL.resume(args.run_dir)
    if args.policy_run is not None:  # another run's agent on this run's model and data
        run.agent.load_state_dict(AGDMBRL.resume(args.policy_run).agent.state_dict())
    model, buffer, cfg = run.world_model.network, run.buffer, run.cfg
    fresh = ActorCriticAgent(model.obs_dim, run.env.action_space.low, run.env.action_space.high,
                             cfg.agent)
    fresh.load_state_dict({k: v for k, v in run.agent.state_dict().items()
                           if "state_norm" in k}, strict=False)  # same input statistics
    rng = np.random.default_rng(args.seed)
    starts = rng.choice(buffer.size, size=min(args.starts, buffer.size), replace=False)
    state_std = buffer.obs[: buffer.size].std(0) + 1e-6
    terminations = {"model": None}
    if args.termination_classifier_steps:
        terminations["classifier"] = fit_termination_classifier(
            buffer, args.termination_classifier_steps, rng)
    rows = []
    for policy_name, agent in (("trained", run.agent), ("fresh", fresh)):
        variants = [(mode, settle) for mode in args.modes
                    for settle in (args.settle if mode != "pull" else ["1:0"])]
        for spec, (mode, settle), (termination, classifier) in itertools.product(
                args.samplers, variants, terminations.items()):
            beta, _, steps = settle.partition(":")
            icfg = with_sampler(cfg.imagination, spec, batch_size=len(starts),
                                guidance="none", segments=1,
                                policy_guidance="sample" if mode == "resample" else mode,
                                experimental=ImaginationExperiments(
                                    termination=termination, resample_actions=mode == "resample"),
                                policy_relaxation=float(beta), settle_steps=int(steps))
            imagination = Imagination(model, copy.deepcopy(agent), icfg,
                                      termination=classifier)
            if mode == "pull":  # tune δ as training would, from the run's δ
                imagination.policy.log_delta = run.world_model.imagination.policy.log_delta
                gen = torch.Generator().manual_seed(args.seed + 1)
                for _ in range(args.tune_batches):
                    idx = rng.integers(0, buffer.size, len(starts))
                    imagination(torch.as_tensor(buffer.obs[idx]), gen)
            recorder = Recorder(imagination)
            row, _ = evaluate_variant(model, imagination.agent, recorder, run.env, starts,
                                      buffer, state_std, args.seed)
            row = {"policy": policy_name, "sampler": spec, "mode": mode,
                   "policy_relaxation": float(beta), "settle_steps": int(steps),
                   "termination": termination,
                   **z_stats(standardized_actions(recorder.segment, imagination.agent)),
                   **{k: row[k] for k in SEGMENT_FIELDS},
                   "policy_delta": row["imagination_policy_delta"]}
            rows.append(row)
            print(f"{policy_name:8s} {spec:8s} {mode:7s} β:settle {settle:6s} "
                  f"{termination:10s} z mean "
                  f"{np.round(row['z_mean_per_dim'], 3)} rms {row['z_rms']:.3f} "
                  f"tail {row['tail_fraction_2.5']:.3f} dyn err {row['dynamics_error']:.4f} "
                  f"reward err {row['reward_error']:.4f} return imagined "
                  f"{row['imagined_return']:.2f} replayed {row['replayed_return']:.2f} "
                  f"terminated {row['imagined_termination']:.3f} "
                  f"(real {row['replayed_termination']:.3f})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "benchmarks/imagined_actions.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "run": {"env": cfg.env, "seed": cfg.seed, "env_steps": run.num_timesteps,
                "policy_run": None if args.policy_run is None else str(args.policy_run)},
        "on_policy_reference": {"z_mean": 0.0, "z_rms": 1.0,
                                "tail_fraction_2.5": NORMAL_TAIL_2_5},
        "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
