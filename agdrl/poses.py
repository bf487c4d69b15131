"""Simulator poses of observations: which generalized positions ``qpos`` a Gymnasium MuJoCo
task's observation holds, so that an imagined observation can be drawn by writing it into the
simulator.

The tasks observe their positions in three ways:

- ``qpos`` itself, without the first coordinates when the task excludes the body's position in
  the world (Hopper, Walker2d and HalfCheetah omit x; Swimmer, Ant, Humanoid and
  HumanoidStandup omit x and y), followed by ``qvel``, whose first entries are the omitted
  coordinates' velocities;
- joint angles as cos and sin (Reacher, InvertedDoublePendulum);
- positions of bodies on slide joints (Pusher's object and goal).

An omitted coordinate is integrated from its observed velocity, starting from its exact value
in the start state: the drawn pose is then entirely what the observations say. Velocities are
not drawn (a frame shows positions only).
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from agdrl.envs import env_id, has_sim_state

OMITTED_POSITIONS = {"HopperEnv": 1, "Walker2dEnv": 1, "HalfCheetahEnv": 1, "SwimmerEnv": 2,
                     "AntEnv": 2, "HumanoidEnv": 2, "HumanoidStandupEnv": 2,
                     "InvertedPendulumEnv": 0}
"""Tasks whose observation starts with ``qpos[k:]`` and then ``qvel``, by class: k, the
leading coordinates left out when the task excludes the body's position (its default)."""


def _angle(cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    return np.arctan2(sin, cos)


def _slide_positions(env: gym.Env, body: str, com: np.ndarray) -> dict[int, float]:
    """qpos entries of the slide joints of ``body`` (a child of the world, not rotated) that
    put its centre of mass at ``com``, by qpos address."""
    model = env.unwrapped.model
    b = model.body(body)
    first, count = int(b.jntadr[0]), int(b.jntnum[0])
    return {int(model.jnt_qposadr[j]): float(model.jnt_axis[j] @ (com - b.pos))
            for j in range(first, first + count)}


def _pusher(env: gym.Env, obs: np.ndarray) -> np.ndarray:
    qpos = np.zeros(env.unwrapped.model.nq)
    qpos[:7] = obs[:7]
    for body, com in (("object", obs[17:20]), ("goal", obs[20:23])):
        for address, value in _slide_positions(env, body, com).items():
            qpos[address] = value
    return qpos


class PoseDecoder:
    """``qpos`` of a task's observations: ``decoder(observations, start_qpos)`` for a
    trajectory (T, ds) whose first state is the simulator state with positions
    ``start_qpos`` (nq,) returns (T, nq)."""

    def __init__(self, env: gym.Env):
        if not has_sim_state(env):
            raise ValueError(f"{env_id(env)} has no MuJoCo simulator state to draw")
        unwrapped = env.unwrapped
        self.nq, self.dt = unwrapped.model.nq, float(unwrapped.dt)
        name = type(unwrapped).__name__
        self.omitted = 0  # leading qpos coordinates integrated from qvel
        self.decode: Callable[[np.ndarray], np.ndarray]
        if name in OMITTED_POSITIONS:
            excluded = getattr(unwrapped, "_exclude_current_positions_from_observation", False)
            self.omitted = OMITTED_POSITIONS[name] if excluded else 0
            k, nq = self.omitted, self.nq
            self.decode = lambda obs: np.concatenate([np.zeros(k), obs[: nq - k]])
        elif name == "InvertedDoublePendulumEnv":
            self.decode = lambda obs: np.concatenate([obs[:1], _angle(obs[3:5], obs[1:3])])
        elif name == "ReacherEnv":
            self.decode = lambda obs: np.concatenate([_angle(obs[0:2], obs[2:4]), obs[4:6]])
        elif name == "PusherEnv":
            self.decode = lambda obs: _pusher(env, obs)
        else:
            known = sorted([*OMITTED_POSITIONS, "InvertedDoublePendulumEnv", "ReacherEnv",
                            "PusherEnv"])
            raise ValueError(f"no pose decoder for {env_id(env)} ({name}): imagined states "
                             f"are drawn for the Gymnasium MuJoCo tasks {', '.join(known)}")

    def __call__(self, observations: np.ndarray, start_qpos: np.ndarray) -> np.ndarray:
        obs = np.asarray(observations, dtype=np.float64)
        qpos = np.stack([self.decode(o) for o in obs])
        k = self.omitted
        if k:
            # the omitted coordinates' velocities are qvel[:k], right after qpos[k:]
            velocity = obs[:, self.nq - k : self.nq]
            steps = (velocity[1:] + velocity[:-1]) / 2 * self.dt  # trapezoid rule
            qpos[:, :k] = start_qpos[:k] + np.concatenate([np.zeros((1, k)),
                                                           np.cumsum(steps, 0)])
        return qpos


def draw(env: gym.Env, qpos: np.ndarray) -> np.ndarray:
    """The frame of ``env`` (made with render_mode='rgb_array') at positions ``qpos``, zero
    velocities (the picture does not depend on them). Changes the env's simulator state."""
    unwrapped = env.unwrapped
    unwrapped.set_state(qpos, np.zeros(unwrapped.model.nv))
    return env.render()
