"""The online loop and its API on tiny real MuJoCo runs: logging, save/load, determinism,
bad input."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from agdrl.cli import main
from agdrl.config import ActorCriticConfig, DenoiserConfig, DiffusionConfig, ImaginationConfig
from agdrl.trainer import AGDMBRL, TrainConfig

TINY = TrainConfig(
    total_steps=300, prefill_steps=150, pretrain_steps=20, eval_every=150, eval_episodes=2,
    diffusion=DiffusionConfig(num_steps=8, batch_size=32,
                              denoiser=DenoiserConfig(width=32, depth=1)),
    agent=ActorCriticConfig(hidden=16),
    imagination=ImaginationConfig(batch_size=32, sampler="ddim", sampler_steps=2))


def test_learn_logs_evaluations_and_round_trips(tmp_path: Path):
    model = AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path)
    model.learn(300)
    assert model.num_timesteps == 300
    # one update at every 4th step after the 150 prefill steps: 152, 156, …, 300
    assert model.agent.updates == 300 // 4 - 150 // 4
    with open(tmp_path / "evaluations.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["env_step"]) for r in rows] == [150, 300]
    assert all(float(r["mean_return"]) > 0 for r in rows)  # the pendulum earns 1 per step
    assert any((tmp_path / "tensorboard").iterdir())
    model.save(tmp_path / "model")
    loaded = AGDMBRL.load(tmp_path / "model")
    obs = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs)[0], loaded.predict(obs)[0])
    assert loaded.num_timesteps == 300 and loaded.cfg == model.cfg


def test_same_seed_same_policy():
    cfg = dataclasses.replace(TINY, total_steps=220, eval_every=0)
    a = AGDMBRL("InvertedPendulum-v5", cfg).learn(220)
    b = AGDMBRL("InvertedPendulum-v5", cfg).learn(220)
    obs = np.random.default_rng(1).normal(size=(4, 4)).astype(np.float32)
    np.testing.assert_array_equal(a.predict(obs)[0], b.predict(obs)[0])
    assert a.evaluate(2) == b.evaluate(2)


def test_env_object_and_shape_mismatch(tmp_path: Path):
    env = gym.make("InvertedPendulum-v5")
    model = AGDMBRL(env, dataclasses.replace(TINY, eval_every=0)).learn(160)
    model.save(tmp_path / "m")
    with pytest.raises(ValueError, match="dims"):
        AGDMBRL.load(tmp_path / "m", env="Hopper-v5")


def test_bad_configs_fail_fast():
    with pytest.raises(ValueError, match="total_steps"):
        AGDMBRL("InvertedPendulum-v5", dataclasses.replace(TINY, total_steps=0))
    with pytest.raises(ValueError, match="polygrad"):
        AGDMBRL("InvertedPendulum-v5", dataclasses.replace(
            TINY, diffusion=dataclasses.replace(TINY.diffusion, layout="joint")))


def test_cli_train_then_eval(tmp_path: Path, capsys):
    args = ["train", "--run-dir", str(tmp_path), "--total-steps", "200", "--prefill-steps",
            "150", "--pretrain-steps", "5", "--eval-every", "0", "--eval-episodes", "2",
            "--diffusion.num-steps", "8", "--diffusion.batch-size", "16",
            "--diffusion.denoiser.width", "16", "--diffusion.denoiser.depth", "1",
            "--imagination.batch-size", "16", "--imagination.sampler", "ddim",
            "--imagination.sampler-steps", "2", "--agent.hidden", "8"]
    assert main(args) == 0
    assert main(["eval", str(tmp_path), "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "mean return" in out and "(200 training steps)" in out


def test_agent_updates_without_per_step_model_updates(tmp_path: Path):
    """model_updates_per_step = 0 (pretraining only) still trains and logs the agent."""
    cfg = dataclasses.replace(TINY, model_updates_per_step=0, eval_every=0)
    model = AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path).learn(300)
    assert model.agent.updates == 300 // 4 - 150 // 4
    assert model.world_model.train_steps == cfg.pretrain_steps
