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
from agdrl.guidance import AdvantageResampling, OneStepAdvantage, SegmentAdvantage
from agdrl.imagination import Imagination
from agdrl.segments import Segment


def candidates(b: int, n: int, h: int = 3) -> Segment:
    """(b · n, h) segments whose state entries name their row, so a kept row is traceable."""
    rows = torch.arange(b * n, dtype=torch.float32)
    return Segment(rows[:, None, None].expand(b * n, h, 2).clone(),
                   -rows[:, None, None].expand(b * n, h, 1).clone(),
                   rows[:, None].expand(b * n, h).clone() * 10, torch.zeros(b * n, h))


def fixed(scores: list[float]) -> Callable[[Segment], torch.Tensor]:
    """A score that gives each start's candidates ``scores``, whatever the segments."""
    values = torch.tensor(scores)
    return lambda seg: values.repeat(len(seg.states) // len(values))


def test_eag_keeps_candidates_with_the_softmax_of_the_standardized_score():
    # scores ±1 (std √2 among two candidates) -> z = ±1/√2; c = √2 · ln(3) / 2 gives weights
    # e^{±ln 3 / 2}, normalized (1/4, 3/4)
    resample = AdvantageResampling(fixed([-1.0, 1.0]), "eag", 2, math.sqrt(2) * math.log(3) / 2)
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


def test_sag_weights_are_the_sigmoid_of_the_scaled_standardized_score():
    scores = torch.tensor([[0.3, 2.0, -1.0, 0.5], [10.0, 10.0, 10.0, 13.0]])
    z = (scores - scores.mean(1, keepdim=True)) / scores.std(1, keepdim=True)
    sag = AdvantageResampling(fixed([0.0]), "sag", 4, 2.0)
    weights = torch.softmax(sag.log_weights(scores), 1)
    expected = torch.sigmoid(2 * z)
    torch.testing.assert_close(weights, expected / expected.sum(1, keepdim=True))
    # a shift or a scale of a start's scores changes nothing (standardized among candidates)
    torch.testing.assert_close(sag.log_weights(scores * 5 - 3), sag.log_weights(scores))


def test_scale_zero_is_uniform_and_a_large_scale_takes_the_best():
    j = [0.3, 2.0, -1.0, 0.5]
    uniform = AdvantageResampling(fixed(j), "eag", 4, 0.0)
    seg = uniform(candidates(8000, 4), torch.Generator().manual_seed(1))
    counts = np.bincount((seg.states[:, 0, 0] % 4).long().numpy(), minlength=4) / 8000
    np.testing.assert_allclose(counts, 0.25, atol=0.02)
    assert uniform.last_ess == pytest.approx(1.0)
    greedy = AdvantageResampling(fixed(j), "eag", 4, 1e4)
    seg = greedy(candidates(50, 4), torch.Generator().manual_seed(1))
    assert torch.all(seg.states[:, 0, 0] % 4 == 1)
    assert greedy.last_ess == pytest.approx(0.25)


def test_segment_advantage_of_td_advantages_is_the_bootstrapped_return_minus_v0():
    torch.manual_seed(0)
    states, rewards = torch.randn(8, 5, 3), torch.randn(8, 5)
    terminals = torch.zeros(8, 5)
    terminals[0, 2] = 1.0  # a predicted terminal at t = 2: nothing counts after it
    seg = Segment(states, torch.zeros(8, 5, 1), rewards, terminals)
    critic = lambda s: s.sum(-1) * 0.7  # noqa: E731
    gamma = 0.9
    a = SegmentAdvantage(OneStepAdvantage(critic, gamma), gamma)(seg)
    v = critic(states)
    expected = (sum(gamma**t * rewards[:, t] for t in range(4)) + gamma**4 * v[:, 4]
                - v[:, 0])
    torch.testing.assert_close(a[1:], expected[1:])
    torch.testing.assert_close(a[0], sum(gamma**t * rewards[0, t] for t in range(3)) - v[0, 0])


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
    # EAG with a large scale keeps the best candidate (SAG's σ saturates: any above the mean)
    greedy = setup(world_model_factory, guidance="eag", guidance_mode="resample",
                   resample_candidates=4, guidance_scale=1e4, segments=2)
    s0 = torch.randn(16, 3)
    seg, metrics = greedy(s0, torch.Generator().manual_seed(0))
    assert seg.states.shape == (16, 7, 3)  # one kept chain of 2 × 4 states per start
    torch.testing.assert_close(seg.states[:, 0], s0)
    assert metrics["resample_ess"] == pytest.approx(0.25)  # one candidate takes all
    assert greedy.state is None  # no gradient on the states
    # the kept first piece has the highest advantage of the four drawn from the same noise
    unguided = setup(world_model_factory, guidance="none", resample_candidates=4)
    pieces, _ = unguided(s0.repeat_interleave(4, 0), torch.Generator().manual_seed(0))
    score = SegmentAdvantage(OneStepAdvantage(greedy.agent.critic, greedy.agent.cfg.gamma),
                             greedy.agent.cfg.gamma)
    with torch.no_grad():
        j = score(Segment(pieces.states[:, :4], pieces.actions[:, :4],
                          pieces.rewards[:, :4], pieces.terminals[:, :4])).reshape(16, 4)
    best = pieces.states[:, :4].reshape(16, 4, 4, 3)[torch.arange(16), j.argmax(1)]
    torch.testing.assert_close(seg.states[:, :4], best)


def test_resampling_needs_an_objective():
    with pytest.raises(ConfigError, match="resample"):
        ImaginationConfig(guidance="cfg", guidance_mode="resample")
    with pytest.raises(ConfigError, match="resample_candidates"):
        ImaginationConfig(guidance="sag", guidance_mode="resample", resample_candidates=0)
