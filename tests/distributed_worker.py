"""Run by tests/test_distributed.py under ``torchrun --nproc-per-node 2`` (gloo, CPU): each
rank trains on its half of fixed batches and writes what it ended with to OUT/rank{R}.npz.

    torchrun --nproc-per-node 2 tests/distributed_worker.py OUT
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import make_linear_buffer, make_world_model

from agdrl import distributed
from agdrl.a2c import ActorCriticAgent
from agdrl.config import ActorCriticConfig
from agdrl.segments import Segment

WORLD_MODEL_STEPS = 3
AGENT_STEPS = 3


def fixed_segment(step: int) -> Segment:
    """The same 64 segments of 6 steps on every rank (no terminals)."""
    g = torch.Generator().manual_seed(100 + step)
    states = torch.randn(64, 6, 3, generator=g)
    actions = torch.rand(64, 6, 2, generator=g) * 1.8 - 0.9
    return Segment(states, actions, states[..., 0] - actions[..., 1], torch.zeros(64, 6))


def half(x, rank: int):
    """Rank ``rank``'s half of a batch (first or second half of axis 0)."""
    n = x.shape[0] // 2
    return x[rank * n : (rank + 1) * n]


def main(out: Path) -> None:
    torch.set_num_threads(1)
    distributed.init_from_env()
    rank = distributed.rank()
    assert distributed.world_size() == 2

    buf = make_linear_buffer(episodes=40)
    torch.manual_seed(0)
    wm = make_world_model(buf, grad_clip=0.0)  # unclipped: the test's reference averages raw grads
    torch.manual_seed(0)
    with_student = make_world_model(buf, student_steps=2, student_teacher_steps=4)
    student_before = torch.cat([p.detach().reshape(-1) for p in with_student.student.parameters()])
    wm_losses = []
    for step in range(WORLD_MODEL_STEPS):
        batch = buf.sample_segments(32, 5, np.random.default_rng(step), pad=False)
        shard = dataclasses.replace(
            batch, **{f.name: half(getattr(batch, f.name), rank)
                      for f in dataclasses.fields(batch) if getattr(batch, f.name) is not None})
        generator = torch.Generator().manual_seed(1000 * step + rank)
        wm_losses.append(wm.train_step(shard, generator))
        with_student.train_step(shard, torch.Generator().manual_seed(1000 * step + rank))
    distributed.check_in_sync(wm, "the world model")
    student = torch.cat([p.detach().reshape(-1) for p in with_student.student.parameters()])

    torch.manual_seed(0)
    agent = ActorCriticAgent(3, np.array([-1.0, -1.0]), np.array([1.0, 1.0]),
                             ActorCriticConfig(hidden=32, target_logp_change=0.02))
    agent_metrics = []
    for step in range(AGENT_STEPS):
        seg = fixed_segment(step)
        mine = Segment(*(half(t, rank) for t in (seg.states, seg.actions, seg.rewards,
                                                 seg.terminals)))
        agent_metrics.append(agent.update(mine))
    distributed.check_in_sync(agent, "the agent")
    agent_params = torch.cat([p.detach().reshape(-1) for p in agent.parameters()]).numpy()

    # a rank that drifts is caught
    diverged = False
    with torch.no_grad():
        next(agent.actor.parameters()).add_(float(rank))
    try:
        distributed.check_in_sync(agent, "the agent")
    except RuntimeError:
        diverged = True

    np.savez(out / f"rank{rank}.npz",
             world_model=torch.cat([p.detach().reshape(-1) for p in wm.parameters()]).numpy(),
             world_model_losses=wm_losses,
             student=student.numpy(), student_change=float((student - student_before).abs().max()),
             agent=agent_params,
             agent_step_scales=[m["actor_step_scale"] for m in agent_metrics],
             divergence_detected=diverged)
    distributed.finish()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
