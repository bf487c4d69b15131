"""Same seed, same numbers on every device.

The trainer seeds CPU generators whatever device its models are on, so every draw must happen
on the generator's device and then move. These tests train, imagine and update on a CUDA
device with CPU-seeded generators and compare against the CPU run; they run wherever a GPU is
present (the lent GPU machine) and are skipped elsewhere.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from agdrl.a2c import ActorCriticAgent
from agdrl.buffer import ReplayBuffer
from agdrl.config import ActorCriticConfig, EnsembleConfig, ImaginationConfig
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.ensemble import ProbabilisticEnsemble
from agdrl.imagination import EnsembleImagination, Imagination
from agdrl.rng import rand, randint, randn

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_seeded_draws_follow_the_generator():
    """The helpers consume the generator: the same seed gives torch's own draws."""
    pairs = ((lambda g: randn((4, 3), g, "cpu"), lambda g: torch.randn(4, 3, generator=g)),
             (lambda g: rand((5,), g, "cpu"), lambda g: torch.rand(5, generator=g)),
             (lambda g: randint(7, (6,), g, "cpu"),
              lambda g: torch.randint(0, 7, (6,), generator=g)))
    for draw, direct in pairs:
        assert torch.equal(draw(torch.Generator().manual_seed(3)),
                           direct(torch.Generator().manual_seed(3)))


def _run(device: str, buffer: ReplayBuffer, build: DiffusionWorldModel,
         agent: ActorCriticAgent, ensemble: ProbabilisticEnsemble) -> dict[str, np.ndarray]:
    """Train the world model (with a 2-step student) and imagine, update the agent and roll
    the ensemble out on ``device``, from copies of the same CPU-initialized modules."""
    wm = DiffusionWorldModel(build.obs_dim, build.action_dim, build.cfg, device)
    wm.load_state_dict(build.state_dict())
    ac = ActorCriticAgent(buffer.obs_dim, -np.ones(buffer.action_dim),
                          np.ones(buffer.action_dim), agent.cfg, device)
    ac.load_state_dict(agent.state_dict())
    ens = ProbabilisticEnsemble(buffer.obs_dim, buffer.action_dim, ensemble.cfg, device)
    ens.load_state_dict(ensemble.state_dict())
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    losses = [wm.train_step(buffer.sample_segments(16, wm.cfg.horizon, rng), gen)
              for _ in range(3)]
    starts = torch.as_tensor(buffer.obs[:8], device=device)
    imagine = Imagination(wm, ac, ImaginationConfig(batch_size=8, sampler_steps=4,
                                                    guidance="sag", policy_guidance="sample"))
    start = time.perf_counter()
    seg, _ = imagine(starts, gen)
    imagine_s = time.perf_counter() - start
    # on CUDA timed by events around the hooks, read here; positive, and at most the chain's
    assert 0 < imagine.guidance_seconds < imagine_s, (imagine.guidance_seconds, imagine_s)
    updated = ac.update(seg)
    rolled, _ = EnsembleImagination(ens, ac, horizon=4)(starts, gen)
    return {"losses": np.array(losses), "states": seg.states.cpu().numpy(),
            "actor_loss": np.array(updated["actor_loss"]),
            "ensemble_states": rolled.states.detach().cpu().numpy(),
            "actions": ac.actor.sample(starts, gen).detach().cpu().numpy()}


@CUDA
def test_a_cuda_run_matches_the_cpu_run_from_the_same_seed(world_model_factory, linear_buffer):
    torch.manual_seed(0)
    wm = world_model_factory(horizon=5, num_steps=16, student_steps=2)
    agent = ActorCriticAgent(linear_buffer.obs_dim, -np.ones(linear_buffer.action_dim),
                             np.ones(linear_buffer.action_dim), ActorCriticConfig(hidden=16))
    ensemble = ProbabilisticEnsemble(linear_buffer.obs_dim, linear_buffer.action_dim,
                                     EnsembleConfig(members=3, elites=2, width=16, depth=2))
    cpu = _run("cpu", linear_buffer, wm, agent, ensemble)
    gpu = _run("cuda", linear_buffer, wm, agent, ensemble)
    for key in cpu:
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-3, atol=1e-4, err_msg=key)
