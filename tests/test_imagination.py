"""Imagination: guided, on-policy segments from real start states, with diagnostics."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch

from agdrl.a2c import ActorCriticAgent
from agdrl.config import ActorCriticConfig, ImaginationConfig
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.guidance import OneStepAdvantage
from agdrl.imagination import Imagination

Factory = Callable[..., DiffusionWorldModel]


def setup(world_model_factory: Factory, **overrides) -> Imagination:
    torch.manual_seed(0)
    wm = world_model_factory(horizon=5, num_steps=16)
    ac = ActorCriticAgent(3, np.array([-1.0, -1.0]), np.array([1.0, 1.0]),
                          ActorCriticConfig(hidden=16))
    cfg = dataclasses.replace(ImaginationConfig(batch_size=32, sampler_steps=8), **overrides)
    return Imagination(wm, ac, cfg)


@pytest.mark.parametrize("guidance", ["none", "sag", "eag"])
def test_segments_start_at_real_states_and_report_their_diagnostics(
        world_model_factory: Factory, guidance: str):
    imagine = setup(world_model_factory, guidance=guidance)
    s0 = torch.randn(32, 3)
    seg, metrics = imagine(s0, torch.Generator().manual_seed(0))
    assert seg.states.shape == (32, 5, 3) and seg.actions.shape == (32, 5, 2)
    torch.testing.assert_close(seg.states[:, 0], s0)
    assert torch.all(seg.actions.abs() <= 1.0)  # squashed into the action box
    expected = OneStepAdvantage(imagine.agent.critic, imagine.agent.cfg.gamma)(seg).mean()
    assert metrics["mean_advantage"] == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["policy_delta"] != pytest.approx(0.005)  # δ adapted after the batch
    assert ("guidance_grad_rms" in metrics) == (guidance != "none")
    assert not seg.states.requires_grad and not seg.actions.requires_grad


def test_state_guidance_changes_the_imagined_states(world_model_factory: Factory):
    plain, _ = setup(world_model_factory, guidance="none")(torch.zeros(32, 3),
                                                          torch.Generator().manual_seed(1))
    guided, _ = setup(world_model_factory, guidance="sag", guidance_mode="normalized",
                      guidance_scale=1.0)(torch.zeros(32, 3), torch.Generator().manual_seed(1))
    assert not torch.allclose(plain.states[:, 1:], guided.states[:, 1:])


def test_bad_options_are_refused(world_model_factory: Factory):
    with pytest.raises(ValueError, match="reward function"):
        setup(world_model_factory, guidance="reward")
    with pytest.raises(ValueError, match="unknown guidance"):
        setup(world_model_factory, guidance="cfg")
    with pytest.raises(ValueError, match="polygrad"):
        wm = world_model_factory(layout="joint")
        ac = ActorCriticAgent(3, np.array([-1.0, -1.0]), np.array([1.0, 1.0]),
                              ActorCriticConfig(hidden=16))
        Imagination(wm, ac, ImaginationConfig())
