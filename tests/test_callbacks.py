"""Callbacks around the training loop: clocks, Stable-Baselines3-style objects, functions."""

from __future__ import annotations

import dataclasses

import pytest

from agdrl import AGDMBRL, PRESETS
from agdrl.callbacks import Callback, Every, as_callback

CFG = dataclasses.replace(PRESETS["tiny"], eval_every=0)


def test_every_is_true_at_multiples_and_never_when_zero():
    assert [s for s in range(1, 13) if Every(4)(s)] == [4, 8, 12]
    assert not any(Every(0)(s) for s in range(1, 100))


class StopAt(Callback):
    def __init__(self, step: int):
        super().__init__()
        self.step, self.started, self.ended = step, 0, 0

    def _on_training_start(self) -> None:
        self.started += 1

    def _on_step(self) -> bool:
        return self.num_timesteps < self.step

    def _on_training_end(self) -> None:
        self.ended += 1


def test_a_callback_object_sees_every_step_and_stops_training():
    stop = StopAt(170)
    model = AGDMBRL("InvertedPendulum-v5", CFG).learn(300, callback=stop)
    assert model.num_timesteps == 170 and stop.n_calls == 170
    assert stop.model is model and (stop.started, stop.ended) == (1, 1)


def test_plain_functions_and_lists_of_callbacks():
    seen: list[int] = []
    stop = StopAt(160)
    model = AGDMBRL("InvertedPendulum-v5", CFG)
    model.learn(200, callback=[lambda agent: seen.append(agent.num_timesteps), stop])
    assert seen == list(range(1, 161)) and model.num_timesteps == 160


def test_something_that_is_no_callback_is_refused():
    with pytest.raises(TypeError, match="a callback must be"):
        as_callback(3)
