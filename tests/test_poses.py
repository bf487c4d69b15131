"""Poses of observations: every Gymnasium MuJoCo v5 task's observation gives back the
simulator's positions, and drawing them gives back the simulator's own picture."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from agdrl.poses import PoseDecoder, draw

MUJOCO_V5 = sorted(t for t, spec in gym.registry.items() if t.endswith("-v5")
                   and str(spec.entry_point).startswith("gymnasium.envs.mujoco"))


def trajectory(env: gym.Env, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Observations (steps + 1, ds) and positions (steps + 1, nq) of random actions."""
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    data = env.unwrapped.data
    observations, positions = [obs], [data.qpos.copy()]
    for _ in range(steps):
        obs, *_ = env.step(env.action_space.sample())
        observations.append(obs)
        positions.append(data.qpos.copy())
    return np.array(observations), np.array(positions)


def test_every_mujoco_v5_task_is_covered():
    assert len(MUJOCO_V5) == 11 and {"Hopper-v5", "Pusher-v5", "Reacher-v5"} <= set(MUJOCO_V5)


@pytest.mark.parametrize("task", MUJOCO_V5)
def test_observations_give_back_the_positions(task: str):
    env = gym.make(task)
    observations, positions = trajectory(env, 25)
    decoder = PoseDecoder(env)
    decoded = decoder(observations, positions[0])
    # angles come back through atan2: compare them on the circle
    wrapped = np.angle(np.exp(1j * (decoded - positions)))
    observed = slice(decoder.omitted, None)
    assert np.abs(wrapped[:, observed]).max() < 1e-6
    # the coordinates the observation omits are integrated from the observed velocity
    # from their exact start value
    omitted = np.abs(decoded[:, : decoder.omitted] - positions[:, : decoder.omitted])
    assert omitted[0].max(initial=0.0) == 0.0 and omitted.max(initial=0.0) < 0.05
    env.close()


def test_the_body_s_position_is_omitted_exactly_where_the_task_leaves_it_out():
    omitted = {t: PoseDecoder(gym.make(t)).omitted for t in MUJOCO_V5}
    assert omitted["Hopper-v5"] == omitted["HalfCheetah-v5"] == omitted["Walker2d-v5"] == 1
    assert omitted["Ant-v5"] == omitted["Swimmer-v5"] == omitted["Humanoid-v5"] == 2
    assert omitted["Reacher-v5"] == omitted["InvertedPendulum-v5"] == 0
    kept = gym.make("Hopper-v5", exclude_current_positions_from_observation=False)
    assert PoseDecoder(kept).omitted == 0


@pytest.mark.parametrize("task", ["Reacher-v5", "Hopper-v5"])
def test_drawing_the_observations_draws_what_the_simulator_shows(task: str):
    env = gym.make(task, render_mode="rgb_array", width=64, height=64)
    canvas = gym.make(task, render_mode="rgb_array", width=64, height=64)
    canvas.reset(seed=1)
    observations, positions = trajectory(env, 12)
    truth = env.render()  # the last state
    drawn = draw(canvas, PoseDecoder(env)(observations, positions[0])[-1])
    assert drawn.shape == truth.shape
    # Reacher's observation holds every position; Hopper's x is integrated (a few mm off)
    differing = (np.abs(drawn.astype(int) - truth.astype(int)) > 8).mean()
    assert differing < (0.001 if task == "Reacher-v5" else 0.05)
    other = draw(canvas, positions[0])  # a pose from 12 steps before
    assert (np.abs(other.astype(int) - truth.astype(int)) > 8).mean() > 0.005
    env.close()
    canvas.close()


def test_a_task_without_a_simulator_state_is_refused_by_name():
    with pytest.raises(ValueError, match="CartPole-v1 has no MuJoCo simulator state"):
        PoseDecoder(gym.make("CartPole-v1"))
