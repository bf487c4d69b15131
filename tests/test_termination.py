"""The termination classifier: learns a termination rule of the transition, relabels imagined
segments, and is refused where it does not apply."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from agdrl import PRESETS
from agdrl.a2c import ActorCriticAgent
from agdrl.buffer import TransitionBatch
from agdrl.config import (
    ActorCriticConfig,
    ConfigError,
    ImaginationConfig,
    ImaginationExperiments,
)
from agdrl.imagination import Imagination
from agdrl.segments import Segment
from agdrl.termination import TerminationModel


def pendulum_like(n: int, rng: np.random.Generator) -> TransitionBatch:
    """Transitions of a 3-d state that terminate when |s'_1| > 0.2 (InvertedPendulum's rule
    on the pole angle), about 10% of them."""
    states = rng.normal(0, 0.1, (n, 3)).astype(np.float32)
    actions = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    next_states = states + rng.normal(0, 0.08, (n, 3)).astype(np.float32)
    terminals = (np.abs(next_states[:, 1]) > 0.2).astype(np.float32)
    return TransitionBatch(states, actions, np.ones(n, np.float32), next_states, terminals)


def test_it_learns_a_termination_rule_of_the_next_state():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = TerminationModel(3, 2, hidden=64)
    data = pendulum_like(20_000, rng)
    model.update_normalizers(data.states, data.actions, data.rewards)
    for _ in range(800):
        model.train_step(pendulum_like(256, rng))
    test = pendulum_like(4000, rng)
    p = model(*(torch.as_tensor(a) for a in (test.states, test.actions, test.next_states)))
    predicted = (p > 0.5).numpy()
    assert 0.05 < test.terminals.mean() < 0.2
    assert np.mean(predicted == test.terminals.astype(bool)) > 0.97
    # and it extrapolates to states the data never held (the angle far out of range)
    far = torch.tensor([[0.0, 0.0, 0.0]]), torch.zeros(1, 2), torch.tensor([[0.0, 0.6, 0.0]])
    assert model(*far).item() > 0.9


def test_relabel_replaces_every_transition_flag_but_the_last():
    torch.manual_seed(0)
    model = TerminationModel(3, 2, hidden=16)
    seg = Segment(torch.randn(4, 5, 3), torch.rand(4, 5, 2), torch.randn(4, 5),
                  torch.full((4, 5), 0.75))
    out = model.relabel(seg)
    expected = model(seg.states[:, :-1], seg.actions[:, :-1], seg.states[:, 1:])
    torch.testing.assert_close(out.terminals[:, :-1], expected)
    torch.testing.assert_close(out.terminals[:, -1], seg.terminals[:, -1])
    assert out.states is seg.states and out.rewards is seg.rewards


CLASSIFIER = ImaginationExperiments(termination="classifier")


def test_imagination_uses_the_classifier_flags(world_model_factory):
    torch.manual_seed(0)
    wm = world_model_factory(horizon=5, num_steps=16)
    agent = ActorCriticAgent(3, -np.ones(2), np.ones(2), ActorCriticConfig(hidden=16))
    classifier = TerminationModel(3, 2, hidden=16)
    cfg = ImaginationConfig(batch_size=8, sampler="ddim", sampler_steps=4,
                            experimental=CLASSIFIER)
    seg, _ = Imagination(wm, agent, cfg, termination=classifier)(
        torch.zeros(8, 3), torch.Generator().manual_seed(0))
    torch.testing.assert_close(seg.terminals[:, :-1],
                               classifier(seg.states[:, :-1], seg.actions[:, :-1],
                                          seg.states[:, 1:]))


def test_it_is_refused_where_it_does_not_apply(world_model_factory):
    wm = world_model_factory(horizon=5, num_steps=16)
    agent = ActorCriticAgent(3, -np.ones(2), np.ones(2), ActorCriticConfig(hidden=16))
    with pytest.raises(ValueError, match="needs a TerminationModel"):
        Imagination(wm, agent, ImaginationConfig(experimental=CLASSIFIER))
    with pytest.raises(ValueError, match="needs a TerminationModel"):
        Imagination(wm, agent, ImaginationConfig(), termination=TerminationModel(3, 2))
    with pytest.raises(ConfigError, match="termination"):
        ImaginationExperiments(termination="oracle")
    fast = PRESETS["fast"]
    with pytest.raises(ConfigError, match="termination classifier"):
        dataclasses.replace(fast, world_model="ensemble",
                            imagination=dataclasses.replace(fast.imagination, guidance="none",
                                                            experimental=CLASSIFIER))
    with pytest.raises(ConfigError, match="reward regressor"):
        dataclasses.replace(fast, world_model="ensemble",
                            imagination=dataclasses.replace(
                                fast.imagination, guidance="none",
                                experimental=ImaginationExperiments(reward="regressor")))
