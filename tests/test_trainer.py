"""The online loop and its API on tiny real MuJoCo runs: logging, save/load, determinism,
bad input."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from agdrl import AGDMBRL, PRESETS, TrainConfig
from agdrl.cli import main
from agdrl.config import (
    ActorCriticConfig,
    DenoiserConfig,
    DiffusionConfig,
    ImaginationConfig,
    ImaginationExperiments,
)

TINY = PRESETS["tiny"]


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
    with pytest.raises(ValueError, match="observation shape"):
        AGDMBRL.load(tmp_path / "m", env="Hopper-v5")


def test_cli_train_then_eval(tmp_path: Path, capsys):
    args = ["train", "--run-dir", str(tmp_path), "--total-steps", "200", "--prefill-steps",
            "150", "--pretrain-steps", "5", "--eval-every", "0", "--eval-episodes", "2",
            "--diffusion.num-steps", "8", "--diffusion.batch-size", "16",
            "--diffusion.denoiser.width", "16", "--diffusion.denoiser.depth", "1",
            "--imagination.batch-size", "16", "--imagination.sampler", "ddim",
            "--imagination.sampler-steps", "2", "--agent.hidden", "8", "--guidance", "eag",
            "--advantage", "gae", "--checkpoint-every", "100"]
    assert main(args) == 0
    # the last lines say what was learned, against a random policy, and where things are
    summary = capsys.readouterr().out
    with open(tmp_path / "evaluations.csv") as f:
        final = float(list(csv.DictReader(f))[-1]["mean_return"])
    assert f"-> {final:.1f} at step 200" in summary and "a random policy: " in summary
    assert f"learning curve: {tmp_path / 'evaluations.csv'}" in summary
    saved = json.loads((tmp_path / "config.json").read_text())["imagination"]
    assert (saved["guidance"], saved["advantage"]) == ("eag", "gae")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == \
        ["step_000000100", "step_000000200"]
    assert main(["eval", str(tmp_path), "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "mean return" in out and "(200 training steps)" in out
    shutil.rmtree(tmp_path / "model")  # an unfinished run: its latest checkpoint is evaluated
    shutil.rmtree(tmp_path / "checkpoints" / "step_000000200")
    assert main(["eval", str(tmp_path), "--episodes", "1"]) == 0
    assert "(100 training steps)" in capsys.readouterr().out


def test_agent_updates_without_per_step_model_updates(tmp_path: Path):
    """model_updates_per_step = 0 (pretraining only) still trains and logs the agent."""
    cfg = dataclasses.replace(TINY, model_updates_per_step=0, eval_every=0)
    model = AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path).learn(300)
    assert model.agent.updates == 300 // 4 - 150 // 4
    assert model.world_model.network.train_steps == cfg.pretrain_steps


def test_train_world_model_fits_the_buffer_without_env_steps():
    """More world-model steps on the collected data: the loss falls, the env is not stepped,
    and an empty buffer or a non-positive count is refused."""
    with pytest.raises(ValueError, match="replay buffer is empty"):
        AGDMBRL("InvertedPendulum-v5", TINY).train_world_model(10)
    model = AGDMBRL("InvertedPendulum-v5", dataclasses.replace(TINY, eval_every=0)).learn(160)
    steps, size = model.world_model.network.train_steps, model.buffer.size
    first = [model.train_world_model(1) for _ in range(20)]
    model.train_world_model(300)
    last = [model.train_world_model(1) for _ in range(20)]
    assert model.world_model.network.train_steps == steps + 340
    assert model.num_timesteps == 160 and model.buffer.size == size
    assert np.mean(last) < 0.8 * np.mean(first), (np.mean(first), np.mean(last))
    with pytest.raises(ValueError, match="steps must be positive"):
        model.train_world_model(0)


@pytest.mark.parametrize(("guidance", "advantage", "metric", "termination", "reward"),
                         [("cfg", "td", "policy_delta", "model", "model"),
                          ("reward", "td", "guidance_grad_rms", "model", "model"),
                          ("eag", "qv", "q_loss", "model", "model"),
                          ("sag", "td", "guidance_grad_rms", "classifier", "regressor")])
def test_every_guidance_trains_and_fills_the_run_directory(tmp_path: Path, guidance: str,
                                                           advantage: str, metric: str,
                                                           termination: str, reward: str):
    cfg = dataclasses.replace(
        TINY, total_steps=360, eval_every=0, checkpoint_every=120, agent_update_every=1,
        imagination=dataclasses.replace(TINY.imagination, guidance=guidance,
                                        advantage=advantage,
                                        experimental=ImaginationExperiments(
                                            termination=termination, reward=reward)))
    model = AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path).learn(360)
    assert model.world_model.network.cfg.advantage_conditioning == (guidance == "cfg")
    assert ((model.world_model.reward_model is not None)
            == (guidance == "reward" or reward == "regressor"))
    assert (model.world_model.termination_model is not None) == (termination == "classifier")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["imagination"]["guidance"] == guidance and saved["seed"] == 0
    with open(tmp_path / "train_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["env_step"]) for r in rows] == [200, 250, 300, 350]
    assert all(np.isfinite(float(r[metric])) for r in rows)
    assert sum(float(v) for k, v in rows[-1].items() if k.startswith("time_fraction")) == \
        pytest.approx(1.0)
    # checkpoints at 120, 240, 360; the two most recent are kept
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == \
        ["step_000000240", "step_000000360"]
    loaded = AGDMBRL.load(tmp_path / "checkpoints" / "step_000000360")
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs)[0], loaded.predict(obs)[0])
    assert loaded.agent.updates == model.agent.updates == 360 - 150
    if model.world_model.reward_model is not None:
        states, actions = torch.randn(7, 4), torch.rand(7, 1) * 6 - 3
        torch.testing.assert_close(model.world_model.reward_model(states, actions),
                                   loaded.world_model.reward_model(states, actions))
    if termination == "classifier":
        states, actions = torch.randn(7, 4), torch.rand(7, 1) * 6 - 3
        before = model.world_model.termination_model(states, actions, states + 0.1)
        torch.testing.assert_close(before, loaded.world_model.termination_model(states, actions,
                                                                    states + 0.1))
        assert model.world_model.termination_model.state_norm.count > 0  # fitted to the real states


def test_time_profile_accounts_for_the_run():
    model = AGDMBRL("InvertedPendulum-v5", dataclasses.replace(TINY, eval_every=0))
    start = time.perf_counter()
    model.learn(300)
    elapsed = time.perf_counter() - start
    profile = model.time_profile()
    assert set(profile) == {"environment", "model", "sampling", "guidance", "agent",
                            "evaluation"}
    assert all(v > 0 for v in profile.values())
    assert 0.8 * elapsed < sum(profile.values()) <= elapsed


def test_video_of_the_first_evaluation_episode(tmp_path: Path):
    imageio = pytest.importorskip("imageio.v3")
    pytest.importorskip("imageio_ffmpeg")
    cfg = dataclasses.replace(TINY, total_steps=160, eval_every=0, eval_episodes=1, video=True)
    model = AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path).learn(160)
    with open(tmp_path / "evaluations.csv") as f:
        episode_return = float(next(csv.DictReader(f))["mean_return"])
    frames = imageio.imread(tmp_path / "videos" / "step_000000160.mp4")
    # the pendulum pays 1 per step and 0 on the step that ends it (it falls within 1000 steps
    # here): 1 frame after reset + (return + 1) steps
    assert episode_return < 999
    assert frames.shape[0] == episode_return + 2 and frames.shape[-1] == 3
    assert frames.std() > 0  # not a blank picture
    model.close()


def test_wandb_receives_the_logged_scalars(tmp_path: Path, monkeypatch):
    """What the run sends (recorded through a stand-in for wandb.init), then a real offline
    run that writes its log file."""
    wandb = pytest.importorskip("wandb")
    sent: list[tuple[dict, int]] = []

    ids: list[str] = []

    class Recorder:
        def log(self, values: dict, step: int) -> None:
            sent.append((values, step))

        def finish(self) -> None:
            pass

    cfg = dataclasses.replace(TINY, total_steps=300, eval_every=0, wandb=True)
    with monkeypatch.context() as patch:
        patch.setattr(wandb, "init", lambda **kwargs: ids.append(kwargs["id"]) or Recorder())
        cfg = dataclasses.replace(cfg, checkpoint_every=100)
        AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path / "fake").learn(250).close()
        AGDMBRL.resume(tmp_path / "fake").learn(100).close()
    assert len(ids) == 2 and ids[0] == ids[1]  # the resumed run logs into the same W&B run
    with open(tmp_path / "fake" / "evaluations.csv") as f:
        logged = float(next(csv.DictReader(f))["mean_return"])
    assert ({"eval/mean_return": pytest.approx(logged)}, 250) in sent
    train = [values for values, step in sent if step == 200]
    assert len(train) == 1 and np.isfinite(train[0]["train/critic_loss"])

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = dataclasses.replace(cfg, total_steps=160)
    AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path / "real").learn(160).close()
    runs = list((tmp_path / "real" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and sum(p.stat().st_size for p in runs[0].glob("*.wandb")) > 0


@pytest.mark.slow
def test_learning_beats_the_random_policy():
    """A short real run on InvertedPendulum-v5 (tiny models, 1000 learning steps after a
    random prefill) ends with a deterministic policy that balances clearly longer than random
    actions do."""
    cfg = TrainConfig(
        total_steps=1500, prefill_steps=500, pretrain_steps=300, eval_every=0, eval_episodes=10,
        diffusion=DiffusionConfig(num_steps=16, batch_size=128,
                                  denoiser=DenoiserConfig(width=128, depth=2)),
        agent=ActorCriticConfig(hidden=64),
        imagination=ImaginationConfig(batch_size=128, sampler="ddim", sampler_steps=4))
    model = AGDMBRL("InvertedPendulum-v5", cfg)
    env = gym.make("InvertedPendulum-v5")
    env.action_space.seed(0)
    random_returns = []
    for episode in range(20):
        env.reset(seed=episode)
        done, total = False, 0.0
        while not done:
            _, r, terminated, truncated, _ = env.step(env.action_space.sample())
            total += r
            done = terminated or truncated
        random_returns.append(total)
    before = np.mean(model.evaluate())
    model.learn(1500)
    after = np.mean(model.evaluate())
    # seeds 0-4 gave random ≈ 4.5, untrained 5-19, trained 19-42
    assert after > 3 * np.mean(random_returns) and after > before


def test_the_ensemble_row_trains_the_same_agent_and_resumes(tmp_path: Path):
    """world_model='ensemble': the actor-critic learns from policy rollouts of the
    autoregressive ensemble; a resumed run matches the uninterrupted one exactly."""
    from agdrl.config import ConfigError, EnsembleConfig

    cfg = dataclasses.replace(
        TINY, world_model="ensemble", ensemble_horizon=6, elite_every=50, eval_every=0,
        checkpoint_every=100, ensemble=EnsembleConfig(members=3, elites=2, width=32, depth=2,
                                                      batch_size=32),
        imagination=dataclasses.replace(TINY.imagination, guidance="none"))
    whole = AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path / "whole").learn(300)
    assert whole.world_model.network.train_steps == 20 + 150  # pretraining + one per learning step
    assert whole.agent.updates == 300 // 4 - 150 // 4
    with open(tmp_path / "whole" / "train_metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert np.isfinite(float(row["critic_loss"])) and "policy_delta" not in row
    AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path / "cut").learn(200).close()
    resumed = AGDMBRL.resume(tmp_path / "cut").learn(100)
    for p, q in zip(whole.agent.state_dict().values(), resumed.agent.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    loaded = AGDMBRL.load(tmp_path / "whole" / "checkpoints" / "step_000000300")
    obs = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs)[0], whole.predict(obs)[0])
    with pytest.raises(ConfigError, match="ensemble row takes guidance 'none'"):
        dataclasses.replace(cfg, imagination=TINY.imagination)


def test_chained_short_segments_train_end_to_end_and_deterministically(tmp_path: Path):
    """The fast preset's layout (short segments chained, relaxation 1, a settle step) on a
    tiny model: the agent learns from trajectories of segments · (H − 1) + 1 states, and two
    same-seed runs agree."""
    cfg = dataclasses.replace(
        TINY, eval_every=0,
        diffusion=dataclasses.replace(TINY.diffusion, horizon=4),
        imagination=dataclasses.replace(TINY.imagination, segments=3, policy_relaxation=1.0,
                                        settle_steps=1, sampler_spacing="trailing"))
    a = AGDMBRL("InvertedPendulum-v5", cfg).learn(200)
    seg, _ = a.world_model.imagine(torch.as_tensor(a.buffer.obs[:5]), torch.Generator())
    assert seg.states.shape == (5, 3 * 3 + 1, 4)
    b = AGDMBRL("InvertedPendulum-v5", cfg).learn(200)
    obs = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
    np.testing.assert_array_equal(a.predict(obs)[0], b.predict(obs)[0])
    assert a.agent.updates == b.agent.updates > 0
