"""GAE and the actor-critic update on imagined segments."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from agdrl.a2c import ActorCriticAgent
from agdrl.config import ActorCriticConfig, ConfigError
from agdrl.returns import gae, reality_weights, td_errors
from agdrl.segments import Segment


def test_gae_hand_computed():
    """γ = 0.9, λ = 0.8, a terminal after step 1 (c_1 = 0):
    δ = [1 + 0.9·1 - 0.5, 2 + 0 - 1, 3 + 0.9·2 - 1.5] = [1.4, 1.0, 3.3];
    A_2 = 3.3, A_1 = 1.0 + 0.72·0·3.3 = 1.0, A_0 = 1.4 + 0.72·1.0 = 2.12."""
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    values = torch.tensor([[0.5, 1.0, 1.5, 2.0]])
    continues = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(td_errors(rewards, values, continues, 0.9),
                               torch.tensor([[1.4, 1.0, 3.3]]))
    torch.testing.assert_close(gae(rewards, values, continues, 0.9, 0.8),
                               torch.tensor([[2.12, 1.0, 3.3]]))
    torch.testing.assert_close(reality_weights(continues), torch.tensor([[1.0, 1.0, 0.0]]))


def test_gae_with_lambda_one_is_the_discounted_return_minus_value():
    g = torch.Generator().manual_seed(0)
    r, v = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    c = torch.ones(3, 6)
    adv = gae(r, v, c, 0.95, 1.0)
    for t in range(5):
        ret = sum(0.95**j * r[:, t + j] for j in range(5 - t)) + 0.95 ** (5 - t) * v[:, 5]
        torch.testing.assert_close(adv[:, t], ret - v[:, t])


def agent(**overrides) -> ActorCriticAgent:
    torch.manual_seed(0)
    cfg = dataclasses.replace(ActorCriticConfig(hidden=32), **overrides)
    return ActorCriticAgent(3, np.array([-1.0, -1.0]), np.array([1.0, 1.0]), cfg)


def imagined(ac: ActorCriticAgent, b: int = 256, h: int = 6, seed: int = 0) -> Segment:
    """Segments whose reward is the first action coordinate: more a_0 is better."""
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(b, h, 3, generator=g)
    with torch.no_grad():
        actions = ac.actor.sample(states, g)
    return Segment(states, actions, actions[..., 0].clone(), torch.zeros(b, h))


def test_line_search_hits_the_wanted_log_prob_change():
    """With a learning rate far too large, the step is scaled back so the mean |Δ log π| is
    within the tolerance of the target."""
    ac = agent(actor_lr=1e-1, target_logp_change=0.01, linesearch_tolerance=0.25)
    metrics = ac.update(imagined(ac))
    assert metrics["actor_step_scale"] < 1.0
    assert metrics["logp_change"] == pytest.approx(0.01, abs=0.0025)


def test_actor_learns_to_prefer_rewarded_actions():
    ac = agent(actor_lr=3e-3, target_logp_change=0.0, grad_clip=0.0)
    probe = torch.randn(512, 3)
    before = ac.actor.mode(probe)[:, 0].mean().item()
    for i in range(60):
        ac.update(imagined(ac, seed=i))
    after = ac.actor.mode(probe)[:, 0].mean().item()
    assert after > before + 0.3


def test_critic_fits_returns_and_target_trails_it():
    """States that stay put and reward s[0]: the λ-return is a function of the state, so
    regression on a fixed batch must cut the loss (the slow target barely moves meanwhile)."""
    ac = agent(critic_lr=3e-3, grad_clip=0.0)
    g = torch.Generator().manual_seed(0)
    states = torch.randn(256, 1, 3, generator=g).expand(256, 6, 3).contiguous()
    seg = Segment(states, torch.zeros(256, 6, 2), states[..., 0].clone(), torch.zeros(256, 6))
    first = ac.update(seg)["critic_loss"]
    for _ in range(40):
        last = ac.update(seg)["critic_loss"]
    assert last < 0.5 * first
    drift = [(t - p).abs().max().item() for t, p in
             zip(ac.critic_target.parameters(), ac.critic.parameters(), strict=True)]
    assert max(drift) > 0  # the target is a slow copy, not the critic itself


def test_update_never_backpropagates_into_the_imagination():
    """Imagined data may arrive with a graph (e.g. from guidance); the update detaches it."""
    ac = agent()
    source = torch.zeros((), requires_grad=True)
    seg = imagined(ac)
    seg = Segment(seg.states + source, seg.actions + 0 * source, seg.rewards + source,
                  seg.terminals)
    ac.update(seg)
    assert source.grad is None


def test_the_actor_learns_only_from_rows_not_steered():
    """Rows marked steered (their actions are not samples of π) change the critic's step but
    not the actor's: the actor ends where the unsteered rows alone take it."""
    alone, mixed = agent(), agent()
    seg = imagined(alone, b=64)
    odd = imagined(alone, b=64, seed=1)  # steered rows: far-off actions, large rewards
    odd = Segment(odd.states, odd.actions.sign(), 10 + 5 * odd.rewards, odd.terminals)
    both = Segment(*(torch.cat([x, y]) for x, y in zip(
        (odd.states, odd.actions, odd.rewards, odd.terminals),
        (seg.states, seg.actions, seg.rewards, seg.terminals), strict=True)),
        steered=torch.arange(128) < 64)
    alone.update(seg)
    mixed.update(both)
    for a, m in zip(alone.actor.parameters(), mixed.actor.parameters(), strict=True):
        torch.testing.assert_close(a, m)
    assert any(not torch.allclose(a, m) for a, m in
               zip(alone.critic.parameters(), mixed.critic.parameters(), strict=True))


def test_bad_config_is_refused():
    with pytest.raises(ConfigError, match="gamma"):
        agent(gamma=0.0)


def test_q_critic_learns_that_the_first_action_pays():
    """With learn_q, Q(s, a) is regressed on the λ-returns; where the reward is a_0, Q − V must
    come to rank a larger first action coordinate higher."""
    torch.manual_seed(0)
    ac = ActorCriticAgent(3, np.array([-1.0, -1.0]), np.array([1.0, 1.0]),
                          ActorCriticConfig(hidden=32, critic_lr=1e-3), learn_q=True)
    losses = [ac.update(imagined(ac, seed=i))["q_loss"] for i in range(300)]
    # the λ-returns carry the later actions' randomness: the loss floor is well above 0
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20])
    states = torch.randn(64, 3)
    with torch.no_grad():
        gap = (ac.q_critic(states, torch.tensor([[0.9, 0.0]]).expand(64, 2))
               - ac.q_critic(states, torch.tensor([[-0.9, 0.0]]).expand(64, 2)))
    assert gap.mean() > 0.9  # the true Q gap is 1.8 (reward a_0 at t)
    assert ActorCriticAgent(3, np.zeros(2) - 1, np.ones(2), ActorCriticConfig()).q_critic is None


class FixedQ(torch.nn.Module):
    """Q(s, a) = −|a − (0.5, −0.5)|², whatever s: its slope points every action at one place."""

    def __init__(self):
        super().__init__()
        self.offset = torch.nn.Parameter(torch.zeros(()))  # so the Q-critic's step has a leaf

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return -(actions - torch.tensor([0.5, -0.5])).pow(2).sum(-1) + self.offset


def test_the_q_actor_gradient_climbs_the_action_value():
    """actor_gradient 'q': the actor follows ∂Q/∂a at its own fresh actions; with rewards that
    carry no signal (zeros), REINFORCE leaves the mean action where it was and the Q slope
    moves it to Q's maximum."""
    probe = torch.randn(512, 3)
    ends = {}
    for kind in ("reinforce", "q"):
        ac = agent(actor_lr=3e-3, target_logp_change=0.0, grad_clip=0.0, actor_gradient=kind)
        if kind == "q":
            ac.q_critic = FixedQ()
        else:
            assert ac.q_critic is None  # built only for the 'q' gradient or Q − V advantages
        g = torch.Generator().manual_seed(0)
        for i in range(60):
            seg = imagined(ac, seed=i)
            ac.update(Segment(seg.states, seg.actions, torch.zeros_like(seg.rewards),
                              seg.terminals), g)
        ends[kind] = ac.actor.mode(probe).mean(0)
    target = torch.tensor([0.5, -0.5])
    assert (ends["q"] - target).norm() < 0.15
    assert (ends["reinforce"] - target).norm() > 0.5


def test_the_q_actor_gradient_leaves_the_q_critics_step_alone_and_repeats_with_its_seed():
    """The actor's loss runs through Q, but Q's own step is its regression alone: the same as
    under REINFORCE. The fresh actions come from the generator, so a seed repeats the update."""
    steps = {}
    for kind in ("reinforce", "q", "q again"):
        torch.manual_seed(0)
        ac = ActorCriticAgent(3, np.array([-1.0, -1.0]), np.array([1.0, 1.0]),
                              ActorCriticConfig(hidden=32, actor_gradient=kind.split()[0]),
                              learn_q=True)
        ac.update(imagined(ac), torch.Generator().manual_seed(1))
        steps[kind] = ([p.detach().clone() for p in ac.q_critic.parameters()],
                       [p.detach().clone() for p in ac.actor.parameters()])
    for r, q in zip(steps["reinforce"][0], steps["q"][0], strict=True):
        torch.testing.assert_close(r, q)
    for a, b in zip(steps["q"][1], steps["q again"][1], strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in
               zip(steps["reinforce"][1], steps["q"][1], strict=True))
