"""The error-avalanche measurement: ground-truth replays, error summaries, chaining, end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agdrl.collect import collect, new_buffer, random_policy
from agdrl.config import DenoiserConfig, DiffusionConfig, EnsembleConfig
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.envs import make_env
from agdrl_lab.avalanche import (
    AvalancheConfig,
    OpenLoopTask,
    build_open_loop_task,
    chained_diffusion_rollout,
    horizon_errors,
    run_avalanche,
    segment_offsets,
)


def test_open_loop_ground_truth_reproduces_recorded_episodes():
    """Restoring the simulator state and replaying the recorded actions gives the recorded
    observations: the avalanche's ground truth is the real environment, exactly."""
    env = make_env("HalfCheetah-v5", seed=0, max_episode_steps=40)
    buf = new_buffer(env)
    rng = np.random.default_rng(0)
    collect(env, random_policy(env), 80, buf, rng, seed=0)
    task = build_open_loop_task(env, buf, max_h=10, num_starts=12, rng=rng)
    assert task.restore_error < 1e-6
    assert np.all(task.valid == 10)
    for j in range(len(task.s0)):
        # find the start in the buffer and compare the next 10 recorded observations
        i = int(np.flatnonzero(np.all(buf.obs[: buf.size] == task.s0[j], axis=1))[0])
        np.testing.assert_allclose(task.true_states[j, 1:], buf.next_obs[i : i + 10], atol=1e-5)
        np.testing.assert_array_equal(task.actions[j], buf.actions[i : i + 11])  # a_0 … a_10


def test_horizon_errors_closed_form_and_masking():
    """Error at h is mean over dims of ((pred - true) / std)^2; steps after the simulator
    terminated are excluded from the statistics."""
    true = np.zeros((2, 4, 3), np.float32)
    pred = np.zeros_like(true)
    pred[0, 1:] = 1.0  # error 1/std^2 = 0.25 with std 2
    pred[1, 1:] = 2.0  # error 1.0, but this replay ended after 1 step
    task = OpenLoopTask(true[:, 0], np.zeros((2, 3, 1)), true, np.array([3, 1]), 0.0)
    summary = horizon_errors(pred, task, np.full(3, 2.0))
    assert summary["mean"][0] == pytest.approx((0.25 + 1.0) / 2)
    assert summary["n"] == [2, 1, 1]
    assert summary["mean"][1] == pytest.approx(0.25)
    assert summary["median"][2] == pytest.approx(0.25)


@pytest.mark.parametrize(("horizon", "max_h", "expected"), [
    (10, 50, [0, 9, 18, 27, 36, 41]), (4, 7, [0, 3, 4]), (50, 50, [0, 1]), (5, 4, [0]),
    (4, 6, [0, 3])])
def test_segment_offsets_end_exactly_at_the_horizon(horizon, max_h, expected):
    offsets = segment_offsets(horizon, max_h)
    assert offsets == expected
    assert offsets[-1] + horizon - 1 >= max_h  # the last segment reaches max_h …
    assert max(o + horizon - 1 for o in offsets) <= max(max_h, horizon - 1)  # … not beyond


def test_chained_rollout_uses_no_action_beyond_the_replay():
    """Predictions up to max_h depend on a_0 … a_{max_h} only: with segments aligned to end at
    max_h, later (non-existent) actions cannot leak into a non-causal segment model."""
    torch.manual_seed(0)
    cfg = DiffusionConfig(horizon=4, num_steps=8, denoiser=DenoiserConfig(width=32, depth=1))
    wm = DiffusionWorldModel(3, 2, cfg)
    s0 = torch.randn(5, 3)
    acts = torch.rand(5, 12, 2)
    other = acts.clone()
    other[:, 8:] = 5.0  # beyond a_7 = a_{max_h}

    def roll(a: torch.Tensor) -> torch.Tensor:
        return chained_diffusion_rollout(wm, wm.default_sampler("ddim", 2), s0, a, 7,
                                         torch.Generator().manual_seed(0))

    states = roll(acts)
    assert states.shape == (5, 8, 3)
    torch.testing.assert_close(states[:, 0], s0)
    torch.testing.assert_close(roll(other), states)


@pytest.mark.slow
def test_run_avalanche_end_to_end(tmp_path: Path):
    """A tiny run writes a JSON whose statistics are consistent with the configuration."""
    cfg = AvalancheConfig(
        env="HalfCheetah-v5", behavior="random", dataset_steps=1000, test_episodes=1,
        train_steps=30, max_horizon=12, num_starts=16, samplers=("ddpm", "ddim:2"),
        diffusion=DiffusionConfig(horizon=5, num_steps=8, batch_size=32,
                                  denoiser=DenoiserConfig(width=64, depth=2)),
        ensemble=EnsembleConfig(members=3, elites=2, width=32, depth=2, batch_size=32),
        out_dir=tmp_path)
    result = run_avalanche(cfg, log=lambda *_: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["errors"].keys() == result["errors"].keys()
    assert set(saved["errors"]) == {"ensemble", "ensemble_mean", "copy_s0",
                                     "diffusion_ddpm", "diffusion_ddim:2"}
    assert saved["restore_max_abs_error"] < 1e-6
    assert saved["segment_offsets"] == [0, 4, 8]  # every H - 1 = 4; 8 + 4 = 12 = max_h
    for e in saved["errors"].values():
        assert len(e["mean"]) == 12
        assert all(v >= 0 for v in e["mean"])
        assert all(n == 16 for n in e["n"])  # HalfCheetah never terminates
    # copying s0 has zero error at no horizon once the cheetah moves; and it grows with h
    copy = saved["errors"]["copy_s0"]["mean"]
    assert copy[-1] > copy[0] > 0
    assert (tmp_path / "error_vs_horizon.png").stat().st_size > 10_000
    # re-evaluating the saved models and data on the same starts gives the same errors
    again = run_avalanche(dataclasses.replace(cfg, reevaluate=True), log=lambda *_: None)
    assert again["errors"] == result["errors"]
    assert again["timings_s"]["diffusion_train_s"] == result["timings_s"]["diffusion_train_s"]
