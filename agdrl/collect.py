"""Collecting real data: behaviour policies and episode rollouts into a replay buffer."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from agdrl.buffer import ReplayBuffer
from agdrl.envs import get_sim_state

ActFn = Callable[[np.ndarray], np.ndarray]


def new_buffer(env: gym.Env, capacity: int = 2_000_000) -> ReplayBuffer:
    """An empty buffer sized for ``env`` (storing simulator states when it has them)."""
    env.reset()
    sim = get_sim_state(env)
    return ReplayBuffer(env.observation_space.shape[0], env.action_space.shape[0], capacity,
                        None if sim is None else len(sim))


def random_policy(env: gym.Env) -> ActFn:
    """Uniform random actions from the env's own (seeded) action space."""
    return lambda obs: env.action_space.sample()


def train_sac_policy(env_id: str, steps: int, seed: int) -> ActFn:
    """Train Stable-Baselines3 SAC for ``steps`` env steps and return its deterministic action.

    A short SAC run gives data from a policy that does something (hops, runs), with the
    varied states of a learning agent; needs the ``sb3`` extra.
    """
    try:
        from stable_baselines3 import SAC
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("the 'sac' behaviour policy needs Stable-Baselines3: "
                          "pip install 'agdrl[sb3]'") from err
    model = SAC("MlpPolicy", gym.make(env_id), seed=seed, learning_starts=min(5000, steps // 4),
                verbose=0, device="cpu")
    model.learn(total_timesteps=steps)
    return lambda obs: model.predict(obs, deterministic=True)[0]


def collect(env: gym.Env, act: ActFn, num_steps: int, buffer: ReplayBuffer,
            rng: np.random.Generator, noise_range: tuple[float, float] = (0.0, 0.0),
            seed: int | None = None) -> list[float]:
    """Run whole episodes until at least ``num_steps`` transitions are added.

    Each episode adds Gaussian action noise with a std drawn uniformly from ``noise_range``
    (relative to the action range), so the data covers more than one policy's states.
    Returns the undiscounted return of each episode.
    """
    low, high = env.action_space.low, env.action_space.high
    returns: list[float] = []
    added = 0
    obs, _ = env.reset(seed=seed)
    while added < num_steps:
        noise_std = rng.uniform(*noise_range) * (high - low) / 2
        done, ret = False, 0.0
        while not done:
            sim = get_sim_state(env)
            action = np.clip(act(obs) + noise_std * rng.standard_normal(len(low)), low, high)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            buffer.add(obs, action, float(reward), next_obs, terminated, truncated, sim)
            ret += float(reward)
            added += 1
            obs = next_obs
            done = terminated or truncated
        returns.append(ret)
        obs, _ = env.reset()
    return returns
