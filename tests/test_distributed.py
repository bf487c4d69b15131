"""Data-parallel training under torchrun: 2 gloo processes on the CPU stay in sync and match a
single process that averages the same two halves' gradients (world model) or trains on the
whole batch (agent); a tiny `agdrl train` runs end to end under torchrun."""

from __future__ import annotations

import copy
import csv
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_linear_buffer, make_world_model
from distributed_worker import AGENT_STEPS, WORLD_MODEL_STEPS, fixed_segment, half

from agdrl.a2c import ActorCriticAgent
from agdrl.config import ActorCriticConfig

WORKER = Path(__file__).parent / "distributed_worker.py"


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("ddp")
    done = torchrun(str(WORKER), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(2)]


@pytest.mark.slow
def test_parameters_stay_in_sync_across_ranks(ranks):
    for key in ("world_model", "agent", "student"):
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])
    assert ranks[0]["student_change"] > 1e-4  # the distilled student did train, in step
    # the two ranks saw different data: their losses differ
    assert not np.allclose(ranks[0]["world_model_losses"], ranks[1]["world_model_losses"])
    # a rank whose weights drift is caught by the check run at every checkpoint
    assert ranks[0]["divergence_detected"] and ranks[1]["divergence_detected"]


@pytest.mark.slow
def test_world_model_matches_a_single_process_averaging_the_two_halves(ranks):
    """One process, per step: the gradient of each half's loss (with the generator that
    rank used), averaged, then the same optimizer and EMA step. Its losses are the ranks'
    losses and its final weights the ranks' weights."""
    buf = make_linear_buffer(episodes=40)
    torch.manual_seed(0)
    wm = make_world_model(buf, grad_clip=0.0)
    for step in range(WORLD_MODEL_STEPS):
        batch = buf.sample_segments(32, 5, np.random.default_rng(step), pad=False)
        grads = []
        for rank in range(2):
            shard = dataclasses.replace(
                batch, **{f.name: half(getattr(batch, f.name), rank)
                          for f in dataclasses.fields(batch)
                          if getattr(batch, f.name) is not None})
            twin = copy.deepcopy(wm)
            loss = twin.train_step(shard, torch.Generator().manual_seed(1000 * step + rank))
            assert loss == pytest.approx(float(ranks[rank]["world_model_losses"][step]),
                                         rel=1e-5)
            grads.append([p.grad for p in twin.diffusion.denoiser.parameters()])
        for p, g0, g1 in zip(wm.diffusion.denoiser.parameters(), *grads, strict=True):
            p.grad = (g0 + g1) / 2
        wm.optimizer.step()
        wm.ema.update(wm.diffusion.denoiser)
    single = torch.cat([p.detach().reshape(-1) for p in wm.parameters()]).numpy()
    np.testing.assert_allclose(ranks[0]["world_model"], single, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_agent_matches_a_single_process_on_the_whole_batch(ranks):
    """The actor-critic update is deterministic: two ranks on halves (gradients, advantage
    statistics and the line search's log-prob change averaged) equal one process on all."""
    torch.manual_seed(0)
    agent = ActorCriticAgent(3, np.array([-1.0, -1.0]), np.array([1.0, 1.0]),
                             ActorCriticConfig(hidden=32, target_logp_change=0.02))
    scales = [agent.update(fixed_segment(step))["actor_step_scale"]
              for step in range(AGENT_STEPS)]
    np.testing.assert_allclose(ranks[0]["agent_step_scales"], scales, rtol=1e-4)
    single = torch.cat([p.detach().reshape(-1) for p in agent.parameters()]).numpy()
    np.testing.assert_allclose(ranks[0]["agent"], single, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_train_runs_under_torchrun(tmp_path: Path):
    """A tiny run on two ranks: the in-sync check at the final checkpoint passes, and only
    rank 0 writes the run directory."""
    run = tmp_path / "run"
    done = torchrun("-m", "agdrl", "train", "tiny", "--run-dir", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    with open(run / "evaluations.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["env_step"]) for r in rows] == [150, 300]
    assert (run / "model" / "config.json").is_file()
    assert done.stdout.count("run directory:") == 1
