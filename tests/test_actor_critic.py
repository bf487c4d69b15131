"""Actor and critic networks: a proper squashed density, bounds, the std floor, raw units."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agdrl.actor_critic import Actor, Critic


def test_squashed_density_integrates_to_one():
    """exp(log π(a|s)) over a 1-D action box [-2, 3] integrates to 1 (trapezoid rule on a fine
    grid; the change of variables is what makes this hold)."""
    torch.manual_seed(0)
    actor = Actor(4, np.array([-2.0]), np.array([3.0]), hidden=16)
    states = torch.randn(3, 4)
    grid = torch.linspace(-2 + 1e-4, 3 - 1e-4, 200_001)
    for s in states:
        density = actor.log_prob(s.expand(len(grid), -1), grid[:, None]).exp()
        assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=2e-3)


def test_samples_stay_in_the_box_and_std_has_a_floor():
    torch.manual_seed(0)
    low, high = np.array([-1.0, 0.0]), np.array([1.0, 5.0])
    actor = Actor(3, low, high, hidden=16, min_std=0.1)
    with torch.no_grad():
        actor.net[-1].bias[2:] = -50.0  # drives the std pre-activation far negative
    states = torch.randn(1000, 3)
    actions = actor.sample(states, torch.Generator().manual_seed(0))
    assert torch.all(actions >= torch.tensor(low, dtype=torch.float32))
    assert torch.all(actions <= torch.tensor(high, dtype=torch.float32))
    _, std = actor(states)
    assert std.min().item() >= 0.1
    torch.testing.assert_close(actor.unsquash(actor.mode(states)), actor(states)[0],
                               atol=1e-3, rtol=1e-3)


def test_networks_normalize_raw_states_with_their_own_statistics():
    """Fitting the critic's normalizer to data with a large offset makes V invariant to that
    offset: the critic sees standardized inputs whatever the raw units."""
    torch.manual_seed(0)
    critic = Critic(2, hidden=16)
    data = torch.randn(500, 2) * torch.tensor([100.0, 0.01]) + torch.tensor([1e4, -3.0])
    critic.state_norm.update(data)
    z = torch.randn(8, 2)
    raw = z * critic.state_norm.std.float() + critic.state_norm.mean.float()
    torch.testing.assert_close(critic(raw), critic.net(z)[..., 0], atol=1e-4, rtol=1e-4)


def test_bad_boxes_and_stds_are_refused():
    with pytest.raises(ValueError, match="low < high"):
        Actor(2, np.array([1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="min_std"):
        Actor(2, np.array([-1.0]), np.array([1.0]), min_std=0.5, init_std=0.2)
