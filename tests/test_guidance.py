"""State guidance: advantage estimators against hand computations, guidance gradients against
finite differences and closed forms, and guidance steps that raise their objective."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from agdrl.actor_critic import Actor
from agdrl.diffusion.samplers import Sampler, StepState, compose
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.guidance import (
    ClassifierFreeGuidance,
    ExponentialAdvantage,
    OneStepAdvantage,
    PolicyGuidance,
    QMinusV,
    RewardSum,
    SegmentGAE,
    SigmoidAdvantage,
    StateGuidance,
    advantage_labels,
    state_gradient,
)
from agdrl.segments import Segment

Factory = Callable[..., DiffusionWorldModel]
GAMMA = 0.9


def smooth_value(states: torch.Tensor) -> torch.Tensor:
    """A nonlinear toy critic: V(s) = Σ_i sin(s_i) + 0.3 |s|^2."""
    return torch.sin(states).sum(-1) + 0.3 * (states**2).sum(-1)


def toy_q(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """A toy action value, nonlinear in both arguments."""
    return torch.cos(states).sum(-1) * (1 + actions.sum(-1)) + (states**2).sum(-1)


def toy_reward(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return -((states - 0.5) ** 2).sum(-1) + 0.1 * actions.sum(-1)


def segment(b: int = 2, h: int = 4, ds: int = 3, da: int = 2, seed: int = 0) -> Segment:
    g = torch.Generator().manual_seed(seed)
    terminals = torch.zeros(b, h, dtype=torch.float64)
    terminals[0, 1] = 0.8  # a predicted terminal (above the 0.5 threshold) at t = 1
    terminals[1, 2] = 0.3  # below the threshold: not terminal
    return Segment(torch.randn(b, h, ds, generator=g, dtype=torch.float64),
                   torch.randn(b, h, da, generator=g, dtype=torch.float64),
                   torch.randn(b, h, generator=g, dtype=torch.float64), terminals)


def test_one_step_advantage_by_hand():
    seg = segment()
    adv = OneStepAdvantage(smooth_value, GAMMA)(seg)
    v = smooth_value(seg.states)
    for b in range(2):
        for t in range(3):
            cont = 0.0 if seg.terminals[b, t] > 0.5 else 1.0
            expected = seg.rewards[b, t] + GAMMA * cont * v[b, t + 1] - v[b, t]
            assert adv[b, t].item() == pytest.approx(expected.item())
    assert adv.shape == (2, 3)


def test_segment_gae_by_hand():
    seg = segment()
    lam = 0.7
    delta = OneStepAdvantage(smooth_value, GAMMA)(seg)
    gae = SegmentGAE(smooth_value, GAMMA, lam)(seg)
    for b in range(2):
        cont = [0.0 if seg.terminals[b, t] > 0.5 else 1.0 for t in range(3)]
        a2 = delta[b, 2]
        a1 = delta[b, 1] + GAMMA * lam * cont[1] * a2
        a0 = delta[b, 0] + GAMMA * lam * cont[0] * a1
        torch.testing.assert_close(gae[b], torch.stack([a0, a1, a2]))


def test_q_minus_v_by_hand():
    seg = segment()
    adv = QMinusV(toy_q, smooth_value)(seg)
    expected = (toy_q(seg.states[:, :3], seg.actions[:, :3]) - smooth_value(seg.states[:, :3]))
    torch.testing.assert_close(adv, expected)


def test_advantage_labels_by_hand():
    """The advantage under V over the segment's real transitions, bootstrapped from the state
    after the last of them (real, also after a time limit) unless a terminal came first, then
    standardized."""
    seg = segment(b=4, h=4)
    seg.terminals.zero_()
    seg.terminals[3, 1] = 1.0  # segment 3 terminates at its transition 1
    valid = torch.ones(4, 4, dtype=torch.bool)
    valid[2, 2:] = False  # segment 2's episode ends (time limit) after transition 1
    labels = advantage_labels(smooth_value, seg, valid, GAMMA)
    v, r = smooth_value(seg.states), seg.rewards
    raw = torch.stack([
        r[0, 0] + GAMMA * r[0, 1] + GAMMA**2 * r[0, 2] + GAMMA**3 * v[0, 3] - v[0, 0],
        r[1, 0] + GAMMA * r[1, 1] + GAMMA**2 * r[1, 2] + GAMMA**3 * v[1, 3] - v[1, 0],
        r[2, 0] + GAMMA * r[2, 1] + GAMMA**2 * v[2, 2] - v[2, 0],  # bootstrapped at s_2
        r[3, 0] + GAMMA * r[3, 1] - v[3, 0]])  # nothing after the terminal
    torch.testing.assert_close(labels, (raw - raw.mean()) / (raw.std() + 1e-8))


def test_classifier_free_guidance_combines_the_two_predictions():
    """out = u + w (c - u), with c and u the labelled and label-free predictions; w = 1 gives
    the conditional model, w = 0 the unconditional one."""
    from agdrl.config import DenoiserConfig
    from agdrl.diffusion.denoisers import make_denoiser

    torch.manual_seed(0)
    net = make_denoiser(DenoiserConfig(width=16, depth=1), 4, 3, 2, 8, labelled=True)
    torch.nn.init.normal_(net.time.label.weight)  # as after training (it starts at zero)
    x, cond, k = torch.randn(5, 4, 3), torch.randn(5, 4, 2), torch.full((5,), 3.0)
    c = net(x, cond, k, torch.full((5,), 1.5))
    u = net(x, cond, k, None)
    assert not torch.allclose(c, u)
    for w in (0.0, 1.0, 2.5):
        torch.testing.assert_close(ClassifierFreeGuidance(net, 1.5, w)(x, cond, k),
                                   u + w * (c - u))


OBJECTIVES = {
    "sag": SigmoidAdvantage(OneStepAdvantage(smooth_value, GAMMA)),
    "eag": ExponentialAdvantage(OneStepAdvantage(smooth_value, GAMMA)),
    "sag-gae": SigmoidAdvantage(SegmentGAE(smooth_value, GAMMA, 0.8)),
    "eag-qv": ExponentialAdvantage(QMinusV(toy_q, smooth_value)),
    "reward": RewardSum(toy_reward),
}


def random_x0(wm: DiffusionWorldModel, b: int = 3, seed: int = 0) -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, wm.cfg.horizon, wm.x_dim, generator=g, dtype=torch.float64)
    cond = torch.randn(b, wm.cfg.horizon, wm.cond_dim, generator=g, dtype=torch.float64)
    return x0, cond


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_state_gradient_matches_finite_differences(world_model_factory: Factory, name: str):
    """∇ of J with respect to the *normalized* predicted states, through the differentiable
    unnormalization, equals central differences (float64, so 1e-6 is a tight tolerance)."""
    wm = world_model_factory(horizon=5)
    objective = OBJECTIVES[name]
    x0, cond = random_x0(wm)
    grad, value = state_gradient(objective, wm, x0, cond)

    def total(x: torch.Tensor) -> float:
        return objective(wm.decode(x, cond)).sum().item()

    eps = 1e-6
    for t in range(1, wm.cfg.horizon - 1):
        for i in range(wm.obs_dim):
            plus, minus = x0.clone(), x0.clone()
            plus[:, t, i] += eps
            minus[:, t, i] -= eps
            fd = (total(plus) - total(minus)) / (2 * eps)
            assert grad[:, t, i].sum().item() == pytest.approx(fd, rel=1e-5, abs=1e-6)
    assert torch.all(grad[:, 0] == 0) and torch.all(grad[:, -1] == 0)
    assert value.shape == (3,)


def test_eag_gradient_closed_form_with_a_linear_critic(world_model_factory: Factory):
    """With V(s) = w·s, Σ_t A_t telescopes: the raw-state gradient at an interior t is
    (γ (1 - d̂_{t-1}) - 1) w, times std for the normalized coordinates."""
    wm = world_model_factory(horizon=5)
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    objective = ExponentialAdvantage(OneStepAdvantage(lambda s: s @ w, GAMMA))
    x0, cond = random_x0(wm, b=2)
    x0[0, 1, -1] = 1.0  # terminal flag +1 in model space: d̂_1 = 1 for segment 0
    x0[1, :, -1] = -1.0  # no terminals in segment 1
    x0[0, [0, 2, 3, 4], -1] = -1.0
    grad, _ = state_gradient(objective, wm, x0, cond)
    std = wm.state_norm.std.to(torch.float64)
    for b, t in [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]:
        cont_prev = 0.0 if (b == 0 and t - 1 == 1) else 1.0
        torch.testing.assert_close(grad[b, t], (GAMMA * cont_prev - 1) * w * std)
    # interior shifts along ∇J lower V (γ < 1); only the last state, when guided, raises it
    assert torch.all((grad[1, 1:4] * w * std).sum(-1) < 0)
    with_last, _ = state_gradient(objective, wm, x0, cond, guide_last=True)
    torch.testing.assert_close(with_last[:, :-1], grad[:, :-1])
    torch.testing.assert_close(with_last[1, -1], GAMMA * w * std)
    assert torch.all(grad[:, -1] == 0)


def test_sag_gradient_closed_form_with_a_linear_critic(world_model_factory: Factory):
    """With V(s) = w·s, the gradient of Σ_t log σ(A_t) at an interior s_t is
    (γ σ(−A_{t−1}) − σ(−A_t)) w (times std): it evens out the one-step advantages rather
    than raising V, and where they are equal it is −(1 − γ) σ(−A) w, a step that lowers V."""
    wm = world_model_factory(horizon=5)
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    advantage = OneStepAdvantage(lambda s: s @ w, GAMMA)
    objective = SigmoidAdvantage(advantage)
    x0, cond = random_x0(wm, b=2)
    x0[..., -1] = -1.0  # no terminals
    grad, _ = state_gradient(objective, wm, x0, cond)
    a = advantage(wm.decode(x0, cond))  # (B, H - 1)
    std = wm.state_norm.std.to(torch.float64)
    for t in (1, 2, 3):
        weight = GAMMA * torch.sigmoid(-a[:, t - 1]) - torch.sigmoid(-a[:, t])  # (B,)
        torch.testing.assert_close(grad[:, t], weight[:, None] * w * std)
    # the weights change sign along a segment of unequal advantages: no push up V overall
    weights = torch.stack([GAMMA * torch.sigmoid(-a[:, t - 1]) - torch.sigmoid(-a[:, t])
                           for t in (1, 2, 3)], 1)
    assert (weights > 0).any() and (weights < 0).any()


def step_state(wm: DiffusionWorldModel, x0: torch.Tensor, cond: torch.Tensor,
               k: int = 5, k_prev: int = 4) -> StepState:
    sigma = wm.diffusion.step_coefficients(k, k_prev)[2]
    return StepState(x_k=x0.clone(), x0=x0, cond=cond, k=k, k_prev=k_prev, index=0,
                     remaining=k + 1, sigma=sigma, noise_std=sigma,
                     alpha_bar=wm.diffusion.alpha_bar_at(k),
                     alpha_bar_prev=wm.diffusion.alpha_bar_at(k_prev), generator=None)


@pytest.mark.parametrize("name", ["sag", "eag", "sag-gae", "reward"])
@pytest.mark.parametrize("mode", ["sigma4", "normalized", "total"])
def test_a_guidance_step_raises_its_objective(world_model_factory: Factory, name: str,
                                              mode: str):
    """A small step up the gradient raises J (SAG/EAG: the critic's advantage terms) and
    leaves the pinned s_0, the last state and everything that is not a state untouched."""
    wm = world_model_factory(horizon=5, num_steps=16)
    objective = OBJECTIVES[name]
    x0, cond = random_x0(wm)
    state = step_state(wm, x0.clone(), cond)
    weight = {"sigma4": float(state.sigma) ** 4, "normalized": float(state.sigma),
              "total": state.alpha_bar_prev - state.alpha_bar}[mode]
    scale = 0.05 / weight
    hook = StateGuidance(wm, objective, scale=scale, mode=mode)
    hook(state)
    before = objective(wm.decode(x0, cond))
    after = objective(wm.decode(state.x0, cond))
    assert torch.all(after > before)
    ds = wm.obs_dim
    torch.testing.assert_close(state.x0[:, [0, -1]], x0[:, [0, -1]])
    torch.testing.assert_close(state.x0[..., ds:], x0[..., ds:])
    assert hook.last_grad_rms > 0


def test_total_mode_moves_by_the_signal_each_jump_adds(world_model_factory: Factory):
    """'total': the step moves the states by c (ᾱ_{k'} − ᾱ_k) along ∇J / rms(∇J), so over any
    grid the weights telescope and the whole movement is about c (ᾱ_0 − ᾱ_{K−1} on a grid
    that ends at index 0)."""
    wm = world_model_factory(horizon=5, num_steps=16)
    linear = lambda seg: seg.states.sum((1, 2))  # noqa: E731 - constant ∇J
    x0, cond = random_x0(wm)
    hook = StateGuidance(wm, linear, scale=2.0, mode="total")
    state = step_state(wm, x0.clone(), cond, k=9, k_prev=5)
    hook(state)
    grad, _ = state_gradient(linear, wm, x0, cond)
    rms = grad.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    weight = wm.diffusion.alpha_bar_at(5) - wm.diffusion.alpha_bar_at(9)
    ds = wm.obs_dim
    torch.testing.assert_close(state.x0[..., :ds] - x0[..., :ds], 2.0 * weight * grad / rms)
    for steps in (2, 4, 16):  # the hook over a whole grid: the same movement at any length
        grid = Sampler("ddim", steps).grid(16)
        moved = torch.zeros_like(x0)
        for k, k_prev in zip(grid, [*grid[1:], -1], strict=True):
            state = step_state(wm, x0.clone(), cond, k=k, k_prev=k_prev)
            hook(state)  # the last jump (k_prev = -1) is never guided
            moved += state.x0 - x0
        end = wm.diffusion.alpha_bar_at(grid[-1]) - wm.diffusion.alpha_bar_at(grid[0])
        torch.testing.assert_close(moved[..., :ds], 2.0 * end * grad / rms)


def test_steps_outside_the_guided_range_are_untouched(world_model_factory: Factory):
    wm = world_model_factory(horizon=5, num_steps=16)
    x0, cond = random_x0(wm)
    hook = StateGuidance(wm, OBJECTIVES["sag"], scale=1e3, max_step=3)
    last = step_state(wm, x0.clone(), cond, k=0, k_prev=-1)  # the final step: never guided
    hook(last)
    torch.testing.assert_close(last.x0, x0)
    early = step_state(wm, x0.clone(), cond, k=8, k_prev=7)  # k > max_step
    hook(early)
    torch.testing.assert_close(early.x0, x0)
    inside = step_state(wm, x0.clone(), cond, k=3, k_prev=2)
    hook(inside)
    assert not torch.equal(inside.x0, x0)


def test_guided_sampling_runs_through_the_world_model(world_model_factory: Factory):
    """Plugged into the sampler, guidance changes the imagined states but not s_0."""
    wm = world_model_factory(horizon=5, num_steps=16)
    s0 = torch.ones(4, 3)
    hook = StateGuidance(wm, SigmoidAdvantage(OneStepAdvantage(smooth_value, GAMMA)),
                         scale=0.5, mode="normalized")
    plain = wm.sample(s0, Sampler("ddpm", 16), generator=torch.Generator().manual_seed(0))
    guided = wm.sample(s0, Sampler("ddpm", 16), hook=hook,
                       generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(guided.states[:, 0], s0)
    assert not torch.allclose(guided.states[:, 1:], plain.states[:, 1:])
    assert not guided.states.requires_grad


def test_unknown_mode_is_refused(world_model_factory: Factory):
    with pytest.raises(ValueError, match="mode"):
        StateGuidance(world_model_factory(), OBJECTIVES["eag"], mode="cubic")


# ---------------------------------------------------------------------- policy guidance
def constant_actor(obs_dim: int, mean: float, std: float) -> Actor:
    """An actor whose policy is N(mean, std) in u-space at every state."""
    actor = Actor(obs_dim, np.array([-1.0, -1.0]), np.array([1.0, 1.0]), hidden=8,
                  min_std=0.05, init_std=1.0)
    with torch.no_grad():
        last = actor.net[-1]
        last.weight.zero_()
        last.bias[:2] = mean
        # softplus(b + bias0) + min_std = std
        last.bias[2:] = float(np.log(np.expm1(std - 0.05))) - actor._std_bias
    return actor


def test_policy_guidance_step_closed_form(world_model_factory: Factory):
    """At the last step (no noise) the pre-squash action moves by δ (μ - u) / σ² after the
    clamp to μ ± 3σ (δ / σ² < 1 here, so the cap does not act)."""
    wm = world_model_factory(horizon=5, num_steps=16)
    actor = constant_actor(wm.obs_dim, mean=0.2, std=0.5)
    hook = PolicyGuidance(wm, actor, delta=0.1, mode="pull")
    u = torch.tensor([-3.0, -0.5, 0.2, 0.6, 2.5])[None, :, None].expand(1, 5, 2).clone()
    cond = wm.action_norm.normalize(actor.squash(u))
    x0 = torch.zeros(1, 5, wm.x_dim)
    state = step_state(wm, x0, cond.float(), k=0, k_prev=-1)
    hook(state)
    clamped = u.clamp(0.2 - 1.5, 0.2 + 1.5)
    expected = clamped + 0.1 * (0.2 - clamped) / 0.25
    got = actor.unsquash(wm.action_norm.unnormalize(state.cond))
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)
    # the spread is the RMS of z = (u - μ) / σ: an offset from μ counts, as it should
    z = (expected - 0.2) / 0.5
    assert hook.last_spread == pytest.approx(float(z.pow(2).mean().sqrt()), rel=1e-3)


def test_policy_guidance_never_overshoots_the_policy_mean(world_model_factory: Factory):
    """With δ ≫ σ² the step lands on μ instead of past it, and δ's tuning then shrinks it
    (a regression: the uncapped step diverged and log δ overflowed in training)."""
    wm = world_model_factory(horizon=5, num_steps=16)
    actor = constant_actor(wm.obs_dim, mean=0.2, std=0.1)
    hook = PolicyGuidance(wm, actor, delta=1.0, mode="pull")  # δ / σ² = 100
    u = torch.linspace(-0.1, 0.5, 5)[None, :, None].expand(1, 5, 2).clone()
    state = step_state(wm, torch.zeros(1, 5, wm.x_dim),
                       wm.action_norm.normalize(actor.squash(u)).float(), k=0, k_prev=-1)
    hook(state)
    got = actor.unsquash(wm.action_norm.unnormalize(state.cond))
    torch.testing.assert_close(got, torch.full_like(got, 0.2), atol=2e-4, rtol=1e-4)
    assert hook.last_spread < 0.01
    before = hook.log_delta
    hook.adapt()
    assert hook.log_delta < before


def test_policy_guided_sampling_matches_the_policy(world_model_factory: Factory):
    """Over a full chain the imagined actions end up distributed like the policy: mean ≈ μ and
    standardized spread near 1 once δ has adapted (a pull toward the policy from pure noise)."""
    torch.manual_seed(0)
    wm = world_model_factory(horizon=5, num_steps=32)
    actor = constant_actor(wm.obs_dim, mean=0.3, std=0.4)
    hook = PolicyGuidance(wm, actor, delta=0.02, adapt_lr=0.5, mode="pull")
    for i in range(15):
        seg = wm.sample(torch.zeros(256, 3), Sampler("ddpm", 32), hook=hook,
                        generator=torch.Generator().manual_seed(i))
        hook.adapt()
    u = actor.unsquash(seg.actions)
    assert u.mean().item() == pytest.approx(0.3, abs=0.1)
    assert hook.last_spread == pytest.approx(1.0, abs=0.35)
    assert not seg.actions.requires_grad


def test_composed_hooks_run_in_order(world_model_factory: Factory):
    calls: list[str] = []
    hook = compose(lambda s: calls.append("policy"), None, lambda s: calls.append("state"))
    wm = world_model_factory(horizon=5, num_steps=4)
    wm.sample(torch.zeros(1, 3), Sampler("ddpm", 4), hook=hook)
    assert calls == ["policy", "state"] * 4


def test_policy_guidance_removes_an_offset_from_the_policy(world_model_factory: Factory):
    """Imagined actions start as noise around the *data's* action mean. With a stochastic
    sampler (8-step DDPM) and δ tuned toward unit RMS of z, they end centred on the policy's
    mean with unit spread. (Under deterministic DDIM the final z is a fixed contraction of
    the initial noise, so no δ removes such an offset: the next test.)"""
    torch.manual_seed(0)
    wm = world_model_factory(horizon=5, num_steps=16)
    wm.action_norm.mean.fill_(0.6)  # the data's actions sit far from the policy's
    actor = constant_actor(wm.obs_dim, mean=-0.3, std=0.3)
    hook = PolicyGuidance(wm, actor, delta=0.005, adapt_lr=0.5, mode="pull")
    for i in range(40):
        seg = wm.sample(torch.zeros(128, 3), Sampler("ddpm", 8), hook=hook,
                        generator=torch.Generator().manual_seed(i))
        hook.adapt()
    z = (actor.unsquash(seg.actions) - (-0.3)) / 0.3
    assert abs(z.mean().item()) < 0.3
    assert hook.last_spread == pytest.approx(1.0, abs=0.3)


@pytest.mark.parametrize("mode", ["sample", "pull"])
def test_sampled_actions_are_policy_samples_under_deterministic_ddim(
        world_model_factory: Factory, mode: str):
    """'sample' mode: the imagined actions standardized by the policy at the segment's own
    states, z = (atanh(a) − μ(ŝ)) / σ(ŝ), are N(0, 1) under deterministic 8-step DDIM with a
    state-dependent policy and the data's actions far from the policy's. 'pull' mode (PolyGRAD)
    keeps an offset there, whatever δ: the defect the 'sample' mode removes."""
    torch.manual_seed(0)
    wm = world_model_factory(horizon=5, num_steps=16)
    wm.action_norm.mean.fill_(0.6)
    actor = Actor(wm.obs_dim, np.array([-1.0, -1.0]), np.array([1.0, 1.0]), hidden=16,
                  min_std=0.05, init_std=0.3)
    hook = PolicyGuidance(wm, actor, delta=0.005, adapt_lr=0.5, mode=mode)
    for i in range(20):
        seg = wm.sample(torch.randn(256, 3), Sampler("ddim", 8), hook=hook,
                        generator=torch.Generator().manual_seed(i))
        hook.adapt()
    mean, std = actor(seg.states)
    z = (actor.unsquash(seg.actions) - mean) / std
    if mode == "sample":
        assert abs(z.mean().item()) < 0.05
        assert z.pow(2).mean().sqrt().item() == pytest.approx(1.0, abs=0.05)
        assert hook.log_delta == pytest.approx(np.log(0.005))  # nothing to tune
    else:
        assert abs(z.mean().item()) > 0.3


@pytest.mark.parametrize("kind", ["heun", "dpm2m"])
def test_sampled_actions_are_exact_policy_samples_under_ode_samplers(
        world_model_factory: Factory, kind: str):
    """Under the second-order samplers too, the final actions are the policy's samples at the
    final states: with relaxation 1 (the actions replaced at every step) z equals the chain's
    fixed noise ε exactly (without the near-end clip, which moves the final states after the
    actions are drawn)."""
    torch.manual_seed(0)
    wm = world_model_factory(horizon=5, num_steps=16)
    actor = Actor(wm.obs_dim, np.array([-1.0, -1.0]), np.array([1.0, 1.0]), hidden=16,
                  min_std=0.05, init_std=0.3)
    hook = PolicyGuidance(wm, actor, mode="sample", relaxation=1.0)
    seg = wm.sample(torch.randn(64, 3), Sampler(kind, 4, clip_max_step=-1), hook=hook,
                    generator=torch.Generator().manual_seed(0))
    mean, std = actor(seg.states)
    z = (actor.unsquash(seg.actions) - mean) / std
    torch.testing.assert_close(z, hook._noise, atol=2e-3, rtol=0)


def test_relaxed_sample_guidance_closed_form(world_model_factory: Factory):
    """'sample' mode: the first step sets u = μ + σ ε; every later step moves u the fraction β
    of the way to μ' + σ' ε under the policy at the new predicted states; last_spread is the
    RMS of (u − μ') / σ' after the last update."""
    wm = world_model_factory(horizon=5, num_steps=16)
    x0 = torch.zeros(4, 5, wm.x_dim)
    hook = PolicyGuidance(wm, constant_actor(wm.obs_dim, mean=0.2, std=0.5), relaxation=0.25)
    first = step_state(wm, x0, torch.zeros(4, 5, 2), k=5, k_prev=4)
    first.generator = torch.Generator().manual_seed(0)
    hook(first)
    eps = hook._noise
    u0 = hook.actor.unsquash(wm.action_norm.unnormalize(first.cond))
    torch.testing.assert_close(u0, 0.2 + 0.5 * eps, atol=2e-4, rtol=1e-4)
    hook.actor = constant_actor(wm.obs_dim, mean=-0.4, std=0.2)  # the states moved
    last = step_state(wm, x0, first.cond, k=0, k_prev=-1)
    last.index = 1
    hook(last)
    expected = u0 + 0.25 * (-0.4 + 0.2 * eps - u0)
    got = hook.actor.unsquash(wm.action_norm.unnormalize(last.cond))
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)
    z = (expected - (-0.4)) / 0.2
    assert hook.last_spread == pytest.approx(float(z.pow(2).mean().sqrt()), rel=1e-3)
    with pytest.raises(ValueError, match="relaxation"):
        PolicyGuidance(wm, hook.actor, relaxation=0.0)


def test_sampled_actions_follow_the_generator(world_model_factory: Factory):
    """The same generator seed gives the same segment; another seed other actions."""
    wm = world_model_factory(horizon=5, num_steps=16)
    actor = constant_actor(wm.obs_dim, mean=0.1, std=0.3)
    hook = PolicyGuidance(wm, actor, mode="sample")
    a, b, c = (wm.sample(torch.zeros(8, 3), Sampler("ddim", 4), hook=hook,
                         generator=torch.Generator().manual_seed(seed)) for seed in (0, 0, 1))
    torch.testing.assert_close(a.actions, b.actions, rtol=0, atol=0)
    assert not torch.allclose(a.actions, c.actions)
