"""Same seed, same numbers on every device.

The trainer seeds CPU generators whatever device its models are on, so every draw must happen
on the generator's device and then move. These tests train, imagine and update on a CUDA
device with CPU-seeded generators and compare against the CPU run; they run wherever a GPU is
present (the lent GPU machine) and are skipped elsewhere.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from agdrl.a2c import ActorCriticAgent
from agdrl.buffer import ReplayBuffer
from agdrl.config import ActorCriticConfig, EnsembleConfig, ImaginationConfig
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.ensemble import ProbabilisticEnsemble
from agdrl.faults import NonFiniteError
from agdrl.imagination import EnsembleImagination, Imagination
from agdrl.rng import rand, randint, randn
from agdrl.segments import Segment

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


def _graph_pair(world_model_factory, **overrides) -> tuple[Imagination, Imagination]:
    """The same model and agent on CUDA behind an uncaptured and a captured imagination."""
    torch.manual_seed(0)
    build = world_model_factory(horizon=5, num_steps=16)
    wm = DiffusionWorldModel(build.obs_dim, build.action_dim, build.cfg, "cuda")
    wm.load_state_dict(build.state_dict())
    agent = ActorCriticAgent(3, -np.ones(2), np.ones(2), ActorCriticConfig(hidden=16), "cuda")
    cfg = ImaginationConfig(batch_size=8, sampler="ddim", sampler_steps=4, guidance="sag",
                            guidance_mode="normalized", guidance_scale=0.5, **overrides)
    return (Imagination(wm, agent, cfg),
            Imagination(wm, agent, dataclasses.replace(cfg, cuda_graph=True)))


def _same_draws(eager: Imagination, graphed: Imagination, starts: torch.Tensor) -> Segment:
    """Both chains from the same state of the device's default generator: the replayed chain
    must give what the eager chain gives (eager draws from that generator too when it is given
    no generator)."""
    torch.cuda.manual_seed(11)
    seg_e, met_e = eager(starts)
    torch.cuda.manual_seed(11)
    seg_g, met_g = graphed(starts)
    for name in ("states", "actions", "rewards", "terminals"):
        torch.testing.assert_close(getattr(seg_g, name), getattr(seg_e, name), rtol=1e-4,
                                   atol=1e-4, msg=name)
    for key in ("action_spread", "guidance_grad_rms", "guidance_objective", "mean_value"):
        assert met_g[key] == pytest.approx(met_e[key], rel=1e-3, abs=1e-5), key
    return seg_g


@CUDA
def test_a_captured_chain_replays_the_eager_chain(world_model_factory, linear_buffer):
    """The CUDA graph gives the eager chain's segments, also after the weights and the
    normalizers' statistics changed in place (the graph reads them at replay), and at a second
    batch size (its own graph; the hooks' tensors then follow the graph that ran last)."""
    eager, graphed = _graph_pair(world_model_factory)
    starts = torch.as_tensor(linear_buffer.obs[:8], device="cuda")
    first = _same_draws(eager, graphed, starts)
    with torch.no_grad():
        for p in [*graphed.agent.parameters(), *graphed.model.ema.model.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    n = linear_buffer.size
    graphed.model.update_normalizers(linear_buffer.obs[:n] * 2 + 1, linear_buffer.actions[:n],
                                     linear_buffer.rewards[:n] * 3)
    graphed.agent.update_normalizers(linear_buffer.obs[:n] * 2 + 1)
    changed = _same_draws(eager, graphed, starts)
    assert (changed.states - first.states).abs().max() > 1e-2  # the change reached the graph
    _same_draws(eager, graphed, starts[:3])
    assert len(graphed.captured.graphs) == 2
    _same_draws(eager, graphed, starts)
    assert graphed.policy._noise.shape[0] == 8


@CUDA
def test_a_captured_chain_still_raises_on_a_non_finite_guidance_gradient(world_model_factory,
                                                                          linear_buffer):
    _, graphed = _graph_pair(world_model_factory)
    starts = torch.as_tensor(linear_buffer.obs[:8], device="cuda")
    graphed(starts)
    with torch.no_grad():
        next(graphed.agent.critic.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="state-guidance gradient"):
        graphed(starts)


@CUDA
def test_a_resumed_captured_run_continues_the_uninterrupted_one(tmp_path):
    """The captured chain's generator is part of the checkpoint, and a capture gives back its
    warm-up draws: a run stopped and resumed on CUDA with cuda_graph ends where an
    uninterrupted one does (to CUDA's float reordering, not bit for bit)."""
    from agdrl import AGDMBRL, PRESETS

    tiny = PRESETS["tiny"]
    cfg = dataclasses.replace(tiny, prefill_steps=120, pretrain_steps=10, eval_every=100,
                              checkpoint_every=100, device="cuda", imagination=dataclasses.replace(
                                  tiny.imagination, cuda_graph=True))
    whole = AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path / "whole").learn(300)
    AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path / "cut").learn(200).close()
    resumed = AGDMBRL.resume(tmp_path / "cut").learn(100)
    for (name, p), q in zip(whole.agent.state_dict().items(),
                            resumed.agent.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)
