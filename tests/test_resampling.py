"""Advantage guidance by resampling: weights, effective sample size, selection, imagination."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from agdrl.a2c import ActorCriticAgent
from agdrl.config import ActorCriticConfig, ConfigError, ImaginationConfig
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.guidance import OneStepAdvantage, SigmoidAdvantage
from agdrl.imagination import Imagination
from agdrl.resampling import AdvantageResampling, StandardizedAdvantage
from agdrl.segments import Segment


def candidates(b: int, n: int, h: int = 3) -> Segment:
    """(b · n, h) segments whose state entries name their row, so a kept row is traceable."""
    rows = torch.arange(b * n, dtype=torch.float32)
    return Segment(rows[:, None, None].expand(b * n, h, 2).clone(),
                   -rows[:, None, None].expand(b * n, h, 1).clone(),
                   rows[:, None].expand(b * n, h).clone() * 10, torch.zeros(b * n, h))


def test_keeps_candidates_with_the_softmax_of_the_scaled_objective():
    log_j = torch.tensor([0.0, math.log(3.0)])  # one start, J = (0, log 3): scale 1 → (¼, ¾)
    resample = AdvantageResampling(lambda seg: log_j.repeat(len(seg.states) // 2), 2, 1.0)
    draws = 20_000
    seg = resample(candidates(draws, 2), torch.Generator().manual_seed(0))
    picked = (seg.states[:, 0, 0] % 2).numpy()  # 0 or 1 within each start's pair
    assert picked.mean() == pytest.approx(0.75, abs=0.01)  # 0.01 ≈ 3 standard errors
    assert resample.last_ess == pytest.approx(1.0 / (0.25**2 + 0.75**2) / 2)  # 0.8
    # every field of a kept segment comes from the same candidate, of its own start
    rows = seg.states[:, 0, 0]
    torch.testing.assert_close(seg.actions[:, 0, 0], -rows)
    torch.testing.assert_close(seg.rewards[:, 0], rows * 10)
    assert torch.equal(torch.div(rows, 2, rounding_mode="floor"), torch.arange(draws).float())


def test_scale_zero_is_uniform_and_a_large_scale_takes_the_best():
    j = torch.tensor([0.3, 2.0, -1.0, 0.5])
    uniform = AdvantageResampling(lambda seg: j.repeat(len(seg.states) // 4), 4, 0.0)
    seg = uniform(candidates(8000, 4), torch.Generator().manual_seed(1))
    counts = np.bincount((seg.states[:, 0, 0] % 4).long().numpy(), minlength=4) / 8000
    np.testing.assert_allclose(counts, 0.25, atol=0.02)
    assert uniform.last_ess == pytest.approx(1.0)
    greedy = AdvantageResampling(lambda seg: j.repeat(len(seg.states) // 4), 4, 1e4)
    seg = greedy(candidates(50, 4), torch.Generator().manual_seed(1))
    assert torch.all(seg.states[:, 0, 0] % 4 == 1)
    assert greedy.last_ess == pytest.approx(0.25)


def test_standardized_advantages_have_unit_spread():
    seg = Segment(torch.randn(64, 4, 3), torch.zeros(64, 4, 1), torch.randn(64, 4) * 50,
                  torch.zeros(64, 4))
    critic = lambda s: s.sum(-1) * 7.0  # noqa: E731
    a = StandardizedAdvantage(OneStepAdvantage(critic, 0.9))(seg)
    assert a.std().item() == pytest.approx(1.0, rel=1e-4)
    raw = OneStepAdvantage(critic, 0.9)(seg)
    torch.testing.assert_close(a, raw / raw.std())


Factory = Callable[..., DiffusionWorldModel]


def setup(world_model_factory: Factory, **overrides) -> Imagination:
    torch.manual_seed(0)
    wm = world_model_factory(horizon=4, num_steps=16)
    ac = ActorCriticAgent(3, np.array([-1.0, -1.0]), np.array([1.0, 1.0]),
                          ActorCriticConfig(hidden=16))
    cfg = dataclasses.replace(ImaginationConfig(batch_size=16, sampler="ddim", sampler_steps=2,
                                                policy_relaxation=1.0, settle_steps=1),
                              **overrides)
    return Imagination(wm, ac, cfg)


def test_resampled_imagination_keeps_the_highest_weighted_candidates(
        world_model_factory: Factory):
    greedy = setup(world_model_factory, guidance="sag", guidance_mode="resample",
                   resample_candidates=4, guidance_scale=1e4, segments=2)
    s0 = torch.randn(16, 3)
    seg, metrics = greedy(s0, torch.Generator().manual_seed(0))
    assert seg.states.shape == (16, 7, 3)  # one kept chain of 2 × 4 states per start
    torch.testing.assert_close(seg.states[:, 0], s0)
    assert 0.25 <= metrics["resample_ess"] < 0.5  # a large scale: nearly one candidate each
    assert greedy.state is None  # no gradient on the states
    # the kept first piece has the highest J of the four drawn from the same noise
    unguided = setup(world_model_factory, guidance="none", resample_candidates=4)
    pieces, _ = unguided(s0.repeat_interleave(4, 0), torch.Generator().manual_seed(0))
    objective = SigmoidAdvantage(StandardizedAdvantage(OneStepAdvantage(
        greedy.agent.critic, greedy.agent.cfg.gamma)))
    with torch.no_grad():
        j = objective(Segment(pieces.states[:, :4], pieces.actions[:, :4],
                              pieces.rewards[:, :4], pieces.terminals[:, :4])).reshape(16, 4)
    best = pieces.states[:, :4].reshape(16, 4, 4, 3)[torch.arange(16), j.argmax(1)]
    torch.testing.assert_close(seg.states[:, :4], best)


def test_resampling_needs_an_objective():
    with pytest.raises(ConfigError, match="resample"):
        ImaginationConfig(guidance="cfg", guidance_mode="resample")
    with pytest.raises(ConfigError, match="resample_candidates"):
        ImaginationConfig(guidance="sag", guidance_mode="resample", resample_candidates=0)
