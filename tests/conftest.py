"""Shared fixtures: a tiny linear system's replay buffer, small world-model builders and a
tiny trained Hopper run.

Torch is limited to one thread: the suite runs on a 2-core machine shared with other work.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agdrl.buffer import ReplayBuffer
from agdrl.config import DenoiserConfig, DiffusionConfig
from agdrl.diffusion.world_model import DiffusionWorldModel

torch.set_num_threads(1)

# s' = A s + B a: a stable, weakly coupled linear system.
LINEAR_A = np.array([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 0.9]])
LINEAR_B = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]) * 0.3
LINEAR_DS, LINEAR_DA = 3, 2


def make_linear_buffer(episodes: int = 200, length: int = 20, seed: int = 0) -> ReplayBuffer:
    """Episodes of the linear system with uniform random actions and reward -|s|^2.

    Every episode is cut by a time limit after ``length`` steps (truncated, never terminal).
    """
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(LINEAR_DS, LINEAR_DA, capacity=episodes * length)
    for _ in range(episodes):
        s = rng.normal(size=LINEAR_DS)
        for t in range(length):
            a = rng.uniform(-1, 1, LINEAR_DA)
            s2 = LINEAR_A @ s + LINEAR_B @ a
            buf.add(s, a, -float(s @ s), s2, False, t == length - 1)
            s = s2
    return buf


def make_world_model(buf: ReplayBuffer, horizon: int = 5,
                     num_steps: int = 16, width: int = 64, depth: int = 2,
                     **overrides: Any) -> DiffusionWorldModel:
    """A small MLP world model whose normalizers are fitted to ``buf``."""
    cfg = DiffusionConfig(horizon=horizon, num_steps=num_steps,
                          denoiser=DenoiserConfig(kind="mlp", width=width, depth=depth),
                          **overrides)
    wm = DiffusionWorldModel(buf.obs_dim, buf.action_dim, cfg)
    n = buf.size
    wm.update_normalizers(buf.obs[:n], buf.actions[:n], buf.rewards[:n])
    return wm


@pytest.fixture(scope="session")
def linear_buffer() -> ReplayBuffer:
    """200 truncated episodes of 20 steps of the linear system (read-only: do not add to it)."""
    return make_linear_buffer()


@pytest.fixture(scope="session")
def linear_buffer_factory() -> Callable[..., ReplayBuffer]:
    """Builds fresh linear-system buffers (e.g. held-out data from another seed)."""
    return make_linear_buffer


@pytest.fixture(scope="session")
def world_model_factory(linear_buffer: ReplayBuffer) -> Callable[..., DiffusionWorldModel]:
    """Builds small untrained world models fitted to ``linear_buffer``'s statistics.

    Keyword arguments are those of :func:`make_world_model` (horizon, num_steps,
    width, depth, and any ``DiffusionConfig`` field).
    """

    def build(**kwargs: Any) -> DiffusionWorldModel:
        return make_world_model(linear_buffer, **kwargs)

    return build


@pytest.fixture(scope="session")
def tiny_hopper_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of the tiny preset on Hopper-v5 (300 steps: a final model and one
    checkpoint with its replay buffer; read-only: copy it to change it)."""
    from agdrl import AGDMBRL, PRESETS

    run = tmp_path_factory.mktemp("tiny_hopper") / "run"
    cfg = dataclasses.replace(PRESETS["tiny"], eval_every=0, eval_episodes=1)
    model = AGDMBRL("Hopper-v5", cfg, run_dir=run).learn(cfg.total_steps)
    model.save(run / "model")
    model.close()
    return run
