"""Imagination: guided, on-policy segments from real start states, with diagnostics."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch

from agdrl.a2c import ActorCriticAgent
from agdrl.config import (
    ActorCriticConfig,
    ConfigError,
    ImaginationConfig,
    ImaginationExperiments,
)
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.guidance import OneStepAdvantage, SigmoidAdvantage
from agdrl.imagination import Imagination
from agdrl.segments import Segment

Factory = Callable[..., DiffusionWorldModel]


def setup(world_model_factory: Factory, learn_q: bool = False, **overrides) -> Imagination:
    torch.manual_seed(0)
    wm = world_model_factory(horizon=5, num_steps=16)
    ac = ActorCriticAgent(3, np.array([-1.0, -1.0]), np.array([1.0, 1.0]),
                          ActorCriticConfig(hidden=16), learn_q=learn_q)
    cfg = dataclasses.replace(ImaginationConfig(batch_size=32, sampler_steps=8), **overrides)
    return Imagination(wm, ac, cfg)


@pytest.mark.parametrize(("guidance", "advantage"),
                         [("none", "td"), ("sag", "td"), ("eag", "td"), ("sag", "gae"),
                          ("eag", "qv")])
def test_segments_start_at_real_states_and_report_their_diagnostics(
        world_model_factory: Factory, guidance: str, advantage: str):
    imagine = setup(world_model_factory, learn_q=advantage == "qv", guidance=guidance,
                    advantage=advantage, policy_guidance="pull")
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


@pytest.mark.parametrize(("spacing", "grid"), [("linspace", [15, 10, 5, 0]),
                                              ("trailing", [15, 11, 7, 3])])
def test_sampler_spacing_sets_the_visited_indices(world_model_factory: Factory, spacing: str,
                                                  grid: list[int]):
    imagine = setup(world_model_factory, sampler="ddim", sampler_steps=4,
                    sampler_spacing=spacing, settle_steps=0)
    seen = []
    imagine.hooks = lambda state: seen.append(state.k)
    imagine(torch.randn(32, 3), torch.Generator().manual_seed(0))
    assert seen == grid


def test_sampled_actions_need_no_delta(world_model_factory: Factory):
    """The default 'sample' policy guidance has nothing to tune; its reported spread, the RMS
    of the standardized actions at the last predicted states, is about 1 once the states and
    actions have settled (32 × 5 × 2 draws)."""
    imagine = setup(world_model_factory)
    assert imagine.cfg.policy_guidance == "sample"
    _, metrics = imagine(torch.randn(32, 3), torch.Generator().manual_seed(0))
    assert metrics["policy_delta"] == pytest.approx(0.005)
    assert metrics["action_spread"] == pytest.approx(1.0, abs=0.15)


def test_resampled_actions_are_policy_samples_at_the_final_states(world_model_factory: Factory):
    """With resample_actions the standardized actions at the segment's own states are exactly
    the chain's ε; without it, and without relaxation and settling (as before 2026-11-27),
    they are drawn at the last step's predicted states and are not. The states are the same
    either way."""
    starts = torch.randn(32, 3)
    old = {"policy_relaxation": 1.0, "settle_steps": 0}
    chain = setup(world_model_factory, **old)
    plain, _ = chain(starts, torch.Generator().manual_seed(0))
    again = setup(world_model_factory, experimental=ImaginationExperiments(resample_actions=True),
                  **old)
    seg, _ = again(starts, torch.Generator().manual_seed(0))
    torch.testing.assert_close(seg.states, plain.states)
    with torch.no_grad():
        torch.testing.assert_close(z_at_own_states(seg, again), again.policy._noise,
                                   atol=1e-3, rtol=1e-3)
        assert (z_at_own_states(plain, chain) - chain.policy._noise).abs().max() > 1e-2
    with pytest.raises(ConfigError, match="resample_actions"):
        ImaginationConfig(policy_guidance="pull",
                          experimental=ImaginationExperiments(resample_actions=True))


def z_at_own_states(seg: Segment, imagine: Imagination) -> torch.Tensor:
    """Standardized actions (B, H, da) at the segment's own states."""
    actor = imagine.agent.actor
    mean, std = actor(seg.states)
    return (actor.unsquash(seg.actions) - mean) / std


def test_settle_steps_make_the_actions_policy_samples_at_the_returned_states(
        world_model_factory: Factory):
    """The default relaxation and settle steps continue the state-action iteration at the
    clean end of the chain: the actions end close to π's samples at the segment's own
    states, closer with each settle step, and the reported action_z_rms is their RMS."""
    starts = torch.randn(32, 3)
    gaps = []
    for settle in (0, 2, 8):
        imagine = setup(world_model_factory, settle_steps=settle)
        seg, metrics = imagine(starts, torch.Generator().manual_seed(0))
        with torch.no_grad():
            z = z_at_own_states(seg, imagine)
        gaps.append((z - imagine.policy._noise).abs().max().item())
        assert metrics["action_z_rms"] == pytest.approx(
            z[:, :-1].pow(2).mean().sqrt().item(), rel=1e-4)
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 0.02
    assert imagine.sampler.network_calls(16) == 8 + 8


def test_state_guidance_changes_the_imagined_states(world_model_factory: Factory):
    plain, _ = setup(world_model_factory, guidance="none")(torch.zeros(32, 3),
                                                          torch.Generator().manual_seed(1))
    guided, _ = setup(world_model_factory, guidance="sag", guidance_mode="normalized",
                      guidance_scale=1.0)(torch.zeros(32, 3), torch.Generator().manual_seed(1))
    assert not torch.allclose(plain.states[:, 1:], guided.states[:, 1:])


def test_the_hooks_name_the_tensors_a_chain_binds(world_model_factory: Factory):
    """A captured chain binds these again after each replay (agdrl.cuda_graph); each must be
    a tensor that the chain set, or the replay would leave a stale or missing value."""
    imagine = setup(world_model_factory, guidance="sag")
    hooks = (imagine.policy, imagine.state)
    before = [dict(vars(hook)) for hook in hooks]
    imagine(torch.zeros(32, 3), torch.Generator().manual_seed(0))
    for hook, was in zip(hooks, before, strict=True):
        set_by_chain = {name for name, value in vars(hook).items()
                        if isinstance(value, torch.Tensor) and value is not was.get(name)}
        # none missing (a replay would leave it stale), none named that the chain never sets
        assert set_by_chain == set(hook.chain_tensors), type(hook).__name__


def test_bad_options_are_refused(world_model_factory: Factory):
    with pytest.raises(ValueError, match="need a RewardModel"):
        setup(world_model_factory, guidance="reward")
    with pytest.raises(ConfigError, match="unknown guidance"):
        setup(world_model_factory, guidance="bogus")
    with pytest.raises(ValueError, match="advantage_conditioning"):
        setup(world_model_factory, guidance="cfg")
    with pytest.raises(ValueError, match="learn_q"):
        setup(world_model_factory, guidance="sag", advantage="qv")
    with pytest.raises(ConfigError, match="unknown advantage"):
        setup(world_model_factory, advantage="bogus")
    with pytest.raises(ValueError, match="on a CUDA device; the world model is on cpu"):
        setup(world_model_factory, cuda_graph=True)
    with pytest.raises(ConfigError, match="cuda_graph needs policy_guidance 'sample'"):
        setup(world_model_factory, cuda_graph=True, policy_guidance="pull")


REGRESSOR = ImaginationExperiments(reward="regressor")


def test_reward_model_learns_and_drives_reward_guidance(world_model_factory: Factory,
                                                        linear_buffer):
    """The learned r(s, a) fits the linear system's reward -|s|^2 and gives reward guidance a
    gradient (that a guidance step raises its objective is tested in test_guidance.py)."""
    from agdrl.reward_model import RewardModel

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    rm = RewardModel(3, 2, hidden=64)
    n = linear_buffer.size
    rm.update_normalizers(linear_buffer.obs[:n], linear_buffer.actions[:n],
                          linear_buffer.rewards[:n])
    for _ in range(400):
        rm.train_step(linear_buffer.sample_transitions(256, rng))
    test = linear_buffer.sample_transitions(1000, np.random.default_rng(1))
    with torch.no_grad():
        pred = rm(torch.as_tensor(test.states), torch.as_tensor(test.actions))
    truth = torch.as_tensor(test.rewards)
    assert ((pred - truth) ** 2).mean() < 0.05 * truth.var()  # explains > 95% of the variance

    torch.manual_seed(0)
    wm = world_model_factory(horizon=5, num_steps=16)
    ac = ActorCriticAgent(3, np.array([-1.0, -1.0]), np.array([1.0, 1.0]),
                          ActorCriticConfig(hidden=16))
    imagine = Imagination(wm, ac, ImaginationConfig(batch_size=32, sampler_steps=8,
                                                    guidance="reward"), rm)
    _, metrics = imagine(torch.as_tensor(linear_buffer.obs[:32]))
    # the learned reward is differentiable in the states: guidance receives a real gradient
    assert metrics["guidance_grad_rms"] > 0
    assert metrics["guidance_objective"] < 0  # Σ of predicted rewards -|s|^2 over the segment

    # reward 'regressor': the imagined rewards are the model's at the imagined transitions
    relabel = Imagination(wm, ac, ImaginationConfig(batch_size=32, sampler_steps=8,
                                                    guidance="none", experimental=REGRESSOR),
                           rm)
    seg, metrics = relabel(torch.as_tensor(linear_buffer.obs[:32]),
                           torch.Generator().manual_seed(0))
    torch.testing.assert_close(seg.rewards, rm(seg.states, seg.actions))
    assert metrics["mean_reward"] == pytest.approx(seg.rewards.mean().item())
    unguided = Imagination(wm, ac, ImaginationConfig(batch_size=32, sampler_steps=8,
                                                     guidance="none"))
    channel, _ = unguided(torch.as_tensor(linear_buffer.obs[:32]),
                          torch.Generator().manual_seed(0))
    torch.testing.assert_close(channel.states, seg.states)  # only the rewards differ
    assert not torch.allclose(channel.rewards, seg.rewards)
    # and SAG scores the relabelled segments, the ones the agent learns from
    sag = Imagination(wm, ac, ImaginationConfig(batch_size=32, sampler_steps=8, guidance="sag",
                                                experimental=REGRESSOR), rm)
    sigmoid_advantage = SigmoidAdvantage(OneStepAdvantage(ac.critic, ac.cfg.gamma))
    with torch.no_grad():
        scored = sag.state.objective(channel)
        torch.testing.assert_close(scored, sigmoid_advantage(rm.relabel(channel)))
        assert not torch.allclose(scored, sigmoid_advantage(channel))
    with pytest.raises(ValueError, match="need a RewardModel"):
        Imagination(wm, ac, ImaginationConfig(experimental=REGRESSOR))
    with pytest.raises(ValueError, match="need a RewardModel"):
        Imagination(wm, ac, ImaginationConfig(guidance="sag"), rm)
    with pytest.raises(ConfigError, match="reward"):
        ImaginationExperiments(reward="oracle")


def test_chained_segments_continue_from_the_previous_last_state(world_model_factory: Factory):
    """segments=3 of H=5: one trajectory of 3·4+1 states whose pieces start where the previous
    one ended; the first piece is the one-segment imagination's, drawn with the same noise."""
    starts = torch.randn(32, 3)
    one = setup(world_model_factory)
    first, _ = one(starts, torch.Generator().manual_seed(0))
    three = setup(world_model_factory, segments=3)
    pieces = []
    original = three._segment
    three._segment = lambda s, g: pieces.append(original(s, g)) or pieces[-1]
    seg, metrics = three(starts, torch.Generator().manual_seed(0))
    assert seg.states.shape == (32, 13, 3) and seg.rewards.shape == (32, 13)
    torch.testing.assert_close(pieces[0].states, first.states)
    for i in range(2):  # each piece starts at the last state of the one before
        torch.testing.assert_close(pieces[i + 1].states[:, 0], pieces[i].states[:, -1])
    # the joined trajectory: the first H-1 steps of each piece, then the whole last piece
    torch.testing.assert_close(seg.states[:, 4:9], pieces[1].states[:, :5])
    torch.testing.assert_close(seg.actions[:, 4], pieces[1].actions[:, 0])
    torch.testing.assert_close(seg.terminals[:, 8:], pieces[2].terminals)
    assert np.isfinite(metrics["mean_value"])


def test_segments_must_be_positive():
    with pytest.raises(ConfigError, match="segments must be positive"):
        ImaginationConfig(segments=0)


@pytest.mark.parametrize(("first", "order"), [(False, ["policy", "state"]),
                                              (True, ["state", "policy"])])
def test_guide_states_first_draws_the_actions_at_the_guided_states(
        world_model_factory: Factory, monkeypatch: pytest.MonkeyPatch, first: bool,
        order: list[str]):
    from agdrl.guidance import PolicyGuidance, StateGuidance

    calls = []
    for cls, name in ((PolicyGuidance, "policy"), (StateGuidance, "state")):
        original = cls.__call__
        monkeypatch.setattr(cls, "__call__", lambda self, state, original=original, name=name:
                            (calls.append(name), original(self, state))[1])
    imagine = setup(world_model_factory, guidance="sag",
                    experimental=ImaginationExperiments(guide_states_first=first),
                    sampler="ddim", sampler_steps=2, settle_steps=0)
    imagine(torch.randn(32, 3), torch.Generator().manual_seed(0))
    assert calls == order * 2  # two denoising steps, each calling both hooks in that order


def test_action_guidance_raises_the_objective_of_the_states_the_actions_lead_to(
        world_model_factory: Factory):
    """One guided step: J of the states the denoiser predicts from x_k under the steered
    actions exceeds J under the policy's actions (a small step up ∇_ε J), the actions stay
    π's samples for the moved ε, and s_0 stays pinned."""
    from agdrl.diffusion.samplers import StepState
    from agdrl.guidance import ActionGuidance

    imagine = setup(world_model_factory, guidance="eag", guidance_mode="normalized",
                    guidance_scale=0.05, policy_relaxation=1.0,
                    experimental=ImaginationExperiments(guide_actions=True))
    guide, policy, model = imagine.state, imagine.policy, imagine.model
    assert isinstance(guide, ActionGuidance)
    gen = torch.Generator().manual_seed(3)
    s0 = model.state_norm.normalize(torch.randn(32, 3))
    k = 8
    x_k = torch.randn(32, 5, model.x_dim, generator=gen)
    x_k[:, 0, :3] = s0
    ks = torch.full((32,), k)

    def objective_under(cond: torch.Tensor) -> torch.Tensor:
        x0 = model.diffusion.predict_x0(x_k, cond, ks, model.ema.model)
        x0[:, 0, :3] = s0
        return guide.objective(model.decode(x0, cond))

    cond = torch.randn(32, 5, model.action_dim, generator=gen)
    x0 = model.diffusion.predict_x0(x_k, cond, ks, model.ema.model)
    x0[:, 0, :3] = s0
    state = StepState(x_k=x_k, x0=x0, cond=cond, k=k, k_prev=4, index=0, remaining=3,
                      sigma=0.5, noise_std=0.0, alpha_bar=0.3, alpha_bar_prev=0.6,
                      generator=gen)
    policy(state)
    with torch.no_grad():
        before = objective_under(state.cond)
    guide(state)
    with torch.no_grad():
        after = objective_under(state.cond)
    assert (after - before).mean() > 0
    with torch.no_grad():
        mean, std = policy.actor(model.decode(x0, cond).states)
    torch.testing.assert_close(policy._u, mean + std * policy._noise)
    torch.testing.assert_close(state.cond, model.action_norm.normalize(
        policy.actor.squash(policy._u)))


def test_action_guidance_needs_a_gradient_guide_and_sampled_actions():
    with pytest.raises(ConfigError, match="guide_actions"):
        ImaginationConfig(guidance="none",
                          experimental=ImaginationExperiments(guide_actions=True))
    with pytest.raises(ConfigError, match="guide_actions"):
        ImaginationConfig(guidance="eag", guidance_mode="resample",
                          experimental=ImaginationExperiments(guide_actions=True))
    with pytest.raises(ConfigError, match="guide_actions"):
        ImaginationExperiments(guide_actions=True, guide_states_first=True)


@pytest.mark.parametrize("actions", [False, True])
def test_unsteered_rows_are_what_unguided_imagination_draws(world_model_factory: Factory,
                                                            actions: bool):
    """steered_fraction 0.5: the first half of the batch is guided (through the states or the
    actions) and marked steered; the second half is exactly the unguided chain's rows. The
    actions' z RMS is reported over each half apart."""
    s0 = torch.randn(32, 3)
    plain, _ = setup(world_model_factory, guidance="none")(s0, torch.Generator().manual_seed(1))
    split = ImaginationExperiments(steered_fraction=0.5, guide_actions=actions)
    imagine = setup(world_model_factory, guidance="sag", guidance_mode="total",
                    guidance_scale=1.0, experimental=split)
    seg, metrics = imagine(s0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(seg.steered, torch.arange(32) < 16)
    with torch.no_grad():
        z = z_at_own_states(seg, imagine)[:, :-1]
    assert metrics["action_z_rms"] == pytest.approx(z[16:].pow(2).mean().sqrt().item(), rel=1e-4)
    assert metrics["steered_action_z_rms"] == pytest.approx(z[:16].pow(2).mean().sqrt().item(),
                                                            rel=1e-4)
    torch.testing.assert_close(seg.states[16:], plain.states[16:])
    torch.testing.assert_close(seg.actions[16:], plain.actions[16:])
    assert not torch.allclose(seg.states[:16, 1:], plain.states[:16, 1:])
    whole, _ = setup(world_model_factory, guidance="sag", guidance_mode="total",
                     guidance_scale=1.0, experimental=ImaginationExperiments(
                         guide_actions=actions))(s0, torch.Generator().manual_seed(1))
    assert whole.steered is None  # every row guided: the actor learns from all of them
    # the steered rows are what guiding the whole batch makes of them
    torch.testing.assert_close(seg.states[:16], whole.states[:16])
    torch.testing.assert_close(seg.actions[:16], whole.actions[:16])


def test_a_steered_fraction_needs_a_gradient_guide():
    with pytest.raises(ConfigError, match="steered_fraction splits the batch"):
        ImaginationConfig(guidance="none",
                          experimental=ImaginationExperiments(steered_fraction=0.5))
    with pytest.raises(ConfigError, match="steered_fraction splits the batch"):
        ImaginationConfig(guidance="sag", guidance_mode="resample",
                          experimental=ImaginationExperiments(steered_fraction=0.5))
    with pytest.raises(ConfigError, match=r"steered_fraction must be in \(0, 1\]"):
        ImaginationExperiments(steered_fraction=0.0)
