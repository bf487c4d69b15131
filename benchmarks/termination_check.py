"""Does a trained diffusion world model predict termination from what happens, or from habit?

From start states of a finished run's replay buffer, imagine one segment per start with the
run's own policy and with a second run's policy (for example one that solves the task), and
set the share of imagined segments with a terminal transition against the share of real
closed-loop episodes, from the same simulator states and with the same policy (its
deterministic action), that terminate within the segment. For a model that predicts
termination from states and actions the two shares should be close for both policies.
It also reports how often the imagined terminal flag comes with no imagined state
beyond the task's termination bound (``--angle-bound`` on observation ``--angle-index``).

Needs a task whose observation is the simulator's full (qpos, qvel), so that a start state
can be restored exactly (InvertedPendulum-v5).

``--extra-model-steps N …`` repeats the measurement after the world model (and its transition
heads) took N more gradient steps in all on the run's own replay buffer, with no new data
(``AGDMBRL.train_world_model``; the optimizer starts afresh, as the saved model has none): is
the model merely undertrained?

    .venv/bin/python benchmarks/termination_check.py \\
        --run results/before_relaxation/InvertedPendulum-v5/agd-sag/seed0 \\
        --other-run results/bench/InvertedPendulum-v5/mbrl-ensemble-h30/seed0 \\
        --out results/diagnosis/invertedpendulum-termination.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from agdrl import AGDMBRL
from agdrl.a2c import ActorCriticAgent
from agdrl.buffer import ReplayBuffer
from agdrl.checkpoint import complete_checkpoints
from agdrl.envs import make_env
from agdrl.imagination import Imagination
from agdrl.provenance import machine_info, source_version
from agdrl.world_models import DiffusionWorld


def real_terminations(env, starts: np.ndarray, agent: ActorCriticAgent, steps: int
                      ) -> np.ndarray:
    """First step (0-based) at which the closed-loop episode from each start terminates within
    ``steps`` steps, −1 where it does not: (N,)."""
    sim = env.unwrapped
    nq = sim.model.nq
    first = np.full(len(starts), -1)
    for i, start in enumerate(starts):
        sim.set_state(start[:nq], start[nq:])
        obs = start
        for t in range(steps):
            with torch.no_grad():
                action = agent.actor.mode(torch.as_tensor(obs, dtype=torch.float32)[None])[0]
            obs, _, terminated, _, _ = env.step(action.numpy())
            if terminated:
                first[i] = t
                break
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a diffusion row's run dir")
    parser.add_argument("--other-run", type=Path, required=True,
                        help="a run whose policy is imagined too")
    parser.add_argument("--starts", type=int, default=256)
    parser.add_argument("--angle-index", type=int, default=1)
    parser.add_argument("--angle-bound", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra-model-steps", type=int, nargs="*", default=[],
                        help="cumulative extra world-model steps to measure after, ascending")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = AGDMBRL.load(args.run / "model")
    other = AGDMBRL.load(args.other_run / "model")
    if not isinstance(run.world_model, DiffusionWorld):
        raise SystemExit(f"{args.run} is not a diffusion row")
    if args.extra_model_steps != sorted(set(args.extra_model_steps)) or any(
            n <= 0 for n in args.extra_model_steps):
        raise SystemExit("--extra-model-steps must be positive and ascending")
    buffer = ReplayBuffer.load(complete_checkpoints(args.run)[-1] / "buffer.npz")
    env = make_env(run.cfg.env, seed=args.seed)
    sim = env.unwrapped
    if buffer.obs_dim != sim.model.nq + sim.model.nv:
        raise SystemExit(f"{run.cfg.env}'s observation is not the full (qpos, qvel)")
    rng = np.random.default_rng(args.seed)
    starts = buffer.obs[rng.integers(0, buffer.size, args.starts)]
    horizon = run.world_model.network.cfg.horizon
    result = {"command": "benchmarks/termination_check.py " + " ".join(sys.argv[1:]),
              "machine": machine_info(), "source": source_version(), "horizon": horizon,
              "buffer_transitions": buffer.size,
              "buffer_terminal_rate": float(buffer.terminated[: buffer.size].mean()),
              "world_model_train_steps": run.world_model.network.train_steps,
              "policies": measure(run, other, env, starts, args)}
    run.buffer, done = buffer, 0
    result["after_extra_model_steps"] = {}
    for steps in args.extra_model_steps:
        loss = run.train_world_model(steps - done)
        done = steps
        print(f"after {steps} more world-model steps (loss {loss:.4f}):")
        result["after_extra_model_steps"][str(steps)] = {
            "world_model_loss": loss, "policies": measure(run, other, env, starts, args)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


def measure(run: AGDMBRL, other: AGDMBRL, env, starts: np.ndarray, args: argparse.Namespace
            ) -> dict[str, dict]:
    """The shares of the module docstring for the run's own policy and the other run's."""
    horizon = run.world_model.network.cfg.horizon
    policies = {}
    for name, agent in (("own", run.agent), ("other", other.agent)):
        imagine = Imagination(run.world_model.network, agent,
                              dataclasses.replace(run.cfg.imagination, batch_size=args.starts),
                              reward_model=run.world_model.reward_model,
                              termination=run.world_model.termination_model)
        seg, _ = imagine(torch.as_tensor(starts, dtype=torch.float32),
                         torch.Generator().manual_seed(args.seed))
        # the flag of the last step ends no transition inside the segment: no return uses it
        flagged = seg.terminals.numpy()[:, :-1] > 0.5
        first = np.where(flagged.any(1), flagged.argmax(1), -1)
        beyond = np.abs(seg.states.numpy()[..., args.angle_index]) > args.angle_bound
        first_beyond = np.where(beyond.any(1), beyond.argmax(1), -1)
        # the terminal of step t is the transition into state t+1
        unexplained = (first >= 0) & ((first_beyond < 0) | (first_beyond > first + 1))
        real = real_terminations(env, starts, agent, horizon - 1)
        policies[name] = {
            "run": str(args.run if name == "own" else args.other_run),
            "imagined_terminal_share": float(np.mean(first >= 0)),
            "imagined_terminal_share_per_step": flagged.mean(0).round(4).tolist(),
            "real_terminal_share": float(np.mean(real >= 0)),
            "imagined_terminal_without_state_beyond_bound": float(np.mean(unexplained)),
            "imagined_states_beyond_bound_share": float(np.mean(first_beyond >= 0)),
            "imagined_mean_reward": float(seg.rewards.mean())}
        print(f"{name:5s} policy: imagined segments with a terminal transition "
              f"{np.mean(first >= 0):.2f}, real episodes terminating within {horizon - 1} "
              f"steps {np.mean(real >= 0):.2f}; terminal with no state beyond the bound "
              f"{np.mean(unexplained):.2f}; imagined states beyond the bound "
              f"{np.mean(first_beyond >= 0):.2f}")
    return policies


if __name__ == "__main__":
    main()
