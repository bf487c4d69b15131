"""Decision-time planning: the score against its closed form, the selection and the MPPI
refinement on a world model whose outcome is known, pinned actions in both world models, the
CLI, and the settings that cannot work."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agdrl import AGDMBRL, PRESETS
from agdrl.cli import main
from agdrl.config import ConfigError, PlannerConfig
from agdrl.planning import Planner, elite_weights, plan_returns
from agdrl.segments import Segment

TINY = dataclasses.replace(PRESETS["tiny"], total_steps=200, prefill_steps=120, pretrain_steps=10,
                           eval_every=0, eval_episodes=1)


def test_plan_return_matches_the_discounted_sum_with_terminations_and_bootstrap():
    torch.manual_seed(0)
    b, h, gamma = 3, 4, 0.9
    seg = Segment(torch.randn(b, h + 2, 2), torch.zeros(b, h + 2, 1), torch.randn(b, h + 2),
                  torch.rand(b, h + 2))

    def value(s: torch.Tensor) -> torch.Tensor:
        return s[..., 0] * 2.0 + s[..., 1]

    got = plan_returns(seg, h, value, gamma)
    for i in range(b):
        alive, total = 1.0, 0.0
        for t in range(h):
            total += gamma**t * alive * float(seg.rewards[i, t])
            alive *= 1.0 - float(seg.terminals[i, t])
        total += gamma**h * alive * float(value(seg.states[i, h]))
        assert math.isclose(float(got[i]), total, rel_tol=1e-5)


def test_elite_weights_are_a_softmax_in_units_of_the_elites_spread():
    scores = torch.tensor([0.0, 3.0, 1.0, 2.0, -5.0])
    index, w = elite_weights(scores, 3, 0.5)
    assert index.tolist() == [1, 3, 2]
    best = torch.tensor([3.0, 2.0, 1.0])
    expected = torch.softmax((best - 3.0) / (0.5 * best.std()), 0)
    torch.testing.assert_close(w, expected)
    _, tied = elite_weights(torch.ones(4), 2, 0.5)
    torch.testing.assert_close(tied, torch.full((2,), 0.5))


class Target:
    """A world model whose trajectories earn r_t = −‖a_t − target‖² (states unchanged, no
    termination): it records the actions it was given."""

    segment_steps = None

    def __init__(self, target: torch.Tensor, agent):
        self.target, self.agent, self.given = target, agent, []

    def rollout(self, starts, steps, generator, actions=None, guided=True,
                denoising_steps=0) -> Segment:
        n = starts.shape[0]
        states = starts[:, None].expand(-1, steps + 1, -1)
        acts = self.agent.agent.actor.sample(states, generator)
        self.given.append(actions)
        if actions is not None:
            acts[: actions.shape[0], :steps] = actions
        rewards = -(acts - self.target).pow(2).sum(-1)
        return Segment(states, acts, rewards, torch.zeros(n, steps + 1))


@pytest.fixture(scope="module")
def agent() -> AGDMBRL:
    return AGDMBRL("InvertedPendulum-v5", TINY)


def planner(agent: AGDMBRL, world, **options) -> Planner:
    """A planner over ``world`` with the agent's actor and a critic that is 0 everywhere."""
    zero_critic = SimpleNamespace(actor=agent.agent.actor, cfg=agent.agent.cfg, device="cpu",
                                  critic=lambda s: torch.zeros(s.shape[:-1]))
    return Planner(world, zero_critic, PlannerConfig(**options),
                   torch.Generator().manual_seed(0))


def test_the_planner_acts_with_the_best_candidates_first_action_and_warm_starts(agent):
    world = Target(torch.tensor([0.7]), agent)
    plan = planner(agent, world, candidates=16, horizon=3, elites=4)
    obs = np.zeros(4, dtype=np.float32)
    first = plan(obs)
    assert world.given[0] is None  # nothing to warm-start from
    assert plan.plan.shape == (3, 1) and np.allclose(first, plan.plan[0].numpy())
    gamma = agent.agent.cfg.gamma ** torch.arange(3.0)
    assert plan.last["best_score"] == pytest.approx(float(  # the best candidate's own return
        -(gamma * (plan.plan[:, 0] - 0.7).pow(2)).sum()), rel=1e-5)
    kept = plan.plan.clone()
    plan(obs)
    torch.testing.assert_close(world.given[1][0], torch.cat([kept[1:], kept[-1:]]))
    plan.reset()
    plan(obs)
    assert world.given[2] is None


def test_refinement_moves_the_action_toward_what_the_model_rewards(agent):
    target = torch.tensor([0.8])
    errors = {}
    for iterations in (1, 6):
        world = Target(target, agent)
        plan = planner(agent, world, candidates=32, horizon=2, elites=6, iterations=iterations,
                       select="mean", warm_start=False)
        errors[iterations] = float(np.mean([abs(plan(np.zeros(4, np.float32))[0] - 0.8)
                                            for _ in range(5)]))
        assert len(world.given) == 5 * iterations
    assert errors[6] < 0.5 * errors[1], errors


def test_pinned_rows_take_their_actions_in_both_world_models(tmp_path: Path):
    for kind in ("diffusion", "ensemble"):
        cfg = TINY if kind == "diffusion" else dataclasses.replace(
            TINY, world_model="ensemble", imagination=dataclasses.replace(TINY.imagination,
                                                                          guidance="none"))
        model = AGDMBRL("InvertedPendulum-v5", cfg).learn(130)
        steps, span = 12, model.world_model.segment_steps
        assert span == (TINY.diffusion.horizon - 1 if kind == "diffusion" else None)
        actions = torch.rand(2, steps, 1) * 4 - 2  # inside InvertedPendulum's box [−3, 3]
        starts = torch.as_tensor(model.obs, dtype=torch.float32).expand(5, -1)
        seg = model.world_model.rollout(starts, steps, torch.Generator().manual_seed(0),
                                        actions)
        assert seg.states.shape == (5, steps + 1, 4)
        torch.testing.assert_close(seg.actions[:2, :steps], actions, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(seg.actions[2:, :steps], seg.actions[2:3, :steps])
        torch.testing.assert_close(seg.states[:, 0], starts)


def test_eval_plans_from_the_command_line(tiny_hopper_run: Path, capsys):
    assert main(["eval", str(tiny_hopper_run), "--episodes", "1", "--plan",
                 "--planner.candidates", "8", "--planner.horizon", "3",
                 "--planner.elites", "2", "--planner.iterations", "2"]) == 0
    assert "over 1 episodes" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--planner.candidates", "0"], "candidates must be positive, got 0"),
    (["--planner.elites", "9", "--planner.candidates", "8"], "elites (9) must not exceed"),
    (["--planner.horizon", "40", "--planner.no-chain"],
     "planner.horizon 40 is longer than one world-model segment (9 steps) and planner.chain "
     "is off"),
    (["--planner.temperature", "nan"], "temperature must be a finite number, got nan"),
])
def test_planner_settings_that_cannot_work_get_one_line(tiny_hopper_run: Path, argv, message):
    with pytest.raises(SystemExit, match="^agdrl: .*" + message.replace("(", r"\(")
                       .replace(")", r"\)")):
        main(["eval", str(tiny_hopper_run), "--episodes", "1", "--plan", *argv])


def test_a_planner_needs_a_critic(agent):
    class NoCritic:
        critic = None
        device = "cpu"

    with pytest.raises(ConfigError, match="bootstraps with the agent's critic"):
        Planner(agent.world_model, NoCritic(), PlannerConfig(), torch.Generator())


def test_a_world_model_that_predicts_nan_everywhere_is_named(agent):
    class Broken(Target):
        def rollout(self, *args, **kwargs) -> Segment:
            seg = super().rollout(*args, **kwargs)
            return Segment(seg.states, seg.actions, torch.full_like(seg.rewards, torch.nan),
                           seg.terminals)

    plan = planner(agent, Broken(torch.tensor([0.0]), agent), candidates=4, horizon=2, elites=2)
    with pytest.raises(ValueError, match="every planned candidate scored NaN"):
        plan(np.zeros(4, np.float32))


@pytest.mark.parametrize("denoising_steps, calls", [(0, 2 * (2 + 4)), (1, 2 * (1 + 4))])
def test_the_planner_denoises_each_segment_in_its_own_steps(agent, denoising_steps: int,
                                                            calls: int):
    """A 12-step plan over 9-step segments chains 2 of them; each costs the sampler's steps
    (the run's 2 DDIM steps, or the planner's own) plus the imagination's 4 settle steps."""
    net, counted = agent.world_model.network, []
    handles = [m.register_forward_hook(lambda *_: counted.append(1))
               for m in (net.ema.model, net.diffusion.denoiser)]
    try:
        plan = agent.planner(PlannerConfig(candidates=4, horizon=12, elites=2, warm_start=False,
                                           denoising_steps=denoising_steps))
        plan(np.zeros(4, np.float32))
    finally:
        for handle in handles:
            handle.remove()
    assert len(counted) == calls and plan.plan.shape == (12, 1)
