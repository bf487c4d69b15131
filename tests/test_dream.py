"""Dreams: the imagined trajectory next to the simulator's replay of its actions, from the
library, the command line and the training loop."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import agdrl.dream
from agdrl import AGDMBRL, PRESETS, ReplayBuffer
from agdrl.checkpoint import complete_checkpoints
from agdrl.cli import main
from agdrl.config import ConfigError
from agdrl.dream import DreamConfig, caption_height, dream
from agdrl.envs import replay_actions
from agdrl.segments import Segment

SIZE = 64  # pixels per picture: small, the tests check content, not looks
TOP = caption_height(SIZE)


def load(run: Path) -> tuple[AGDMBRL, ReplayBuffer]:
    return (AGDMBRL.load(run / "model"),
            ReplayBuffer.load(complete_checkpoints(run)[-1] / "buffer.npz"))


def test_each_clip_is_the_imagined_trajectory_and_the_simulator_replaying_its_actions(
        tiny_hopper_run: Path):
    model, buffer = load(tiny_hopper_run)
    cfg = DreamConfig(starts=2, segments=2, size=SIZE, seed=3)
    result = dream(model, buffer, cfg)
    h = model.cfg.diffusion.horizon
    length = 2 * (h - 1) + 1  # two chained segments
    assert len(result.clips) == 2 and len(result.frames) == 2 * length
    assert result.frames[0].shape == (SIZE + TOP, 2 * SIZE, 3)
    assert result.imagination.segments == 2 and result.env_step == model.num_timesteps
    env = model.eval_env
    again = imagine_again(model, buffer, cfg)
    for clip in result.clips:
        i = clip.buffer_index
        assert clip.imagined_states.shape == (length, buffer.obs_dim)
        np.testing.assert_allclose(clip.imagined_states[0], buffer.obs[i], atol=1e-5)
        assert clip.errors[0] < 1e-8  # the same start state
        # imagined again from the same starts and seed: the same trajectory (the dream is
        # reproducible), whose actions the simulator replayed from the exact start state
        imagined, actions = again[i]
        np.testing.assert_array_equal(imagined, clip.imagined_states)
        states, rewards, steps, ended = replay_actions(env, buffer.sim_states[i], actions)
        assert (clip.real_steps, clip.real_terminated) == (steps, ended)
        np.testing.assert_array_equal(clip.real_states[: steps + 1], states[: steps + 1])
        np.testing.assert_array_equal(clip.real_rewards, rewards)
        assert np.isnan(clip.errors[steps + 1 :]).all()
        assert np.isfinite(clip.errors[: steps + 1]).all()
    # another seed: other start states
    other = dream(model, buffer, dataclasses.replace(cfg, seed=4, starts=1, segments=1))
    assert other.clips[0].buffer_index not in [c.buffer_index for c in result.clips]


def imagine_again(model: AGDMBRL, buffer: ReplayBuffer, cfg: DreamConfig
                  ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """By buffer index of each start: the states (L, ds) and the transitions' actions
    (L − 1, da), imagined again with the dream's starts and seed."""
    rng = np.random.default_rng(cfg.seed)
    index = np.sort(rng.choice(buffer.size, cfg.starts, replace=False))
    imagination, _ = agdrl.dream._imagination(model, buffer, cfg, len(index), rng)
    seg, _ = imagination(torch.as_tensor(buffer.obs[index]),
                         torch.Generator().manual_seed(cfg.seed))
    return {int(i): (seg.states[j].detach().numpy().astype(np.float64),
                     seg.actions[j, :-1].detach().numpy()) for j, i in enumerate(index)}


class PerfectImagination:
    """A world model that imagines exactly what the simulator does: the states and rewards of
    random actions replayed from each start."""

    def __init__(self, model: AGDMBRL, buffer: ReplayBuffer, steps: int):
        self.model, self.buffer, self.steps = model, buffer, steps

    def __call__(self, starts: torch.Tensor, generator: torch.Generator):
        index = [int(np.flatnonzero((self.buffer.obs[: self.buffer.size] == s.numpy())
                                    .all(1))[0]) for s in starts]
        rng = np.random.default_rng(0)
        env, pieces = self.model.eval_env, []
        for i in index:
            actions = rng.uniform(-0.3, 0.3, (self.steps, self.buffer.action_dim))
            states, rewards, steps, _ = replay_actions(env, self.buffer.sim_states[i], actions)
            states[steps + 1 :] = states[steps]  # a terminated episode: hold the last state
            pieces.append((states, np.vstack([actions, actions[-1:]]),
                           np.append(rewards, 0.0), np.zeros(self.steps + 1)))
        return Segment.from_numpy(*(np.stack(p) for p in zip(*pieces, strict=True))), {}


def test_a_perfect_world_model_dreams_what_the_simulator_shows(tiny_hopper_run: Path,
                                                               monkeypatch):
    model, buffer = load(tiny_hopper_run)
    cfg = DreamConfig(starts=2, size=SIZE)
    monkeypatch.setattr(agdrl.dream, "_imagination", lambda model, buffer, cfg, batch, rng: (
        PerfectImagination(model, buffer, 8), model.cfg.imagination))
    result = dream(model, buffer, cfg)
    for j, clip in enumerate(result.clips):
        steps = clip.real_steps
        assert steps >= 3
        assert np.nanmax(clip.errors) < 1e-10
        np.testing.assert_allclose(clip.imagined_rewards[:steps], clip.real_rewards[:steps],
                                   atol=1e-6)
        for t in range(steps + 1):
            frame = result.frames[j * 9 + t][TOP:]
            imagined, real = frame[:, :SIZE].astype(int), frame[:, SIZE:].astype(int)
            # the two pictures agree but for the integrated x (a few millimetres) and the
            # divider line
            assert (np.abs(imagined[:, 2:] - real[:, 2:]) > 24).mean() < 0.03


def test_agdrl_dream_writes_video_gif_numbers_and_page(tiny_hopper_run: Path, tmp_path: Path,
                                                       capsys):
    out = tmp_path / "dreams" / "hopper"
    assert main(["dream", str(tiny_hopper_run), "--starts", "1", "--segments", "2",
                 "--guidance", "none", "--sampler", "ddim", "--sampler-steps", "2",
                 "--size", str(SIZE), "--fps", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "guidance none" in printed and "clip 1: buffer index" in printed
    assert "s per second" in printed
    summary = json.loads(out.with_suffix(".json").read_text())
    steps = 2 * (PRESETS["tiny"].diffusion.horizon - 1)
    assert summary["kind"] == agdrl.dream.KIND and summary["during_training"] is False
    assert summary["imagination"]["guidance"] == "none"
    assert summary["imagination"]["segments"] == 2
    assert summary["imagination"]["sampler_steps"] == 2
    assert summary["frames"] == steps + 1 and len(summary["clips"]) == 1
    assert len(summary["clips"][0]["state_errors"]) == steps + 1
    video = iio.imread(out.with_suffix(".mp4"), index=None)
    assert video.shape == (steps + 1, SIZE + TOP, 2 * SIZE, 3)
    gif = out.with_suffix(".gif").read_bytes()
    assert gif.startswith(b"GIF89a") and len(iio.imread(gif, index=None)) == steps + 1
    page = out.with_suffix(".html").read_text()
    assert "data:video/mp4;base64," in page and "<svg" in page and "<table>" in page
    # nothing to fetch: every source is embedded (SVG namespaces are names, not fetched)
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # or in-page references
    assert "http://" not in re.sub(r'xmlns(:\w+)?="http://www.w3.org/[^"]*"', "", page)


def test_dream_runs_in_the_run_s_dreams_folder_by_default(tiny_hopper_run: Path,
                                                          tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(tiny_hopper_run, run)
    assert main(["dream", str(run), "--starts", "1", "--size", str(SIZE),
                 "--formats", "mp4"]) == 0
    written = sorted(p.name for p in (run / "dreams").iterdir())
    assert written == ["step_000000300-sag-ddim2.json", "step_000000300-sag-ddim2.mp4"]


def test_an_ensemble_run_dreams_its_policy_rollouts(tmp_path: Path):
    cfg = dataclasses.replace(PRESETS["tiny"], total_steps=200, eval_every=0, eval_episodes=1,
                              world_model="ensemble",
                              imagination=dataclasses.replace(PRESETS["tiny"].imagination,
                                                              guidance="none"))
    AGDMBRL("Hopper-v5", cfg, run_dir=tmp_path).learn(200).save(tmp_path / "model")
    assert main(["dream", str(tmp_path), "--starts", "1", "--size", str(SIZE),
                 "--formats", "mp4"]) == 0
    summary = json.loads((tmp_path / "dreams" / "step_000000200-ensemble.json").read_text())
    assert summary["world_model"] == "ensemble"
    assert summary["frames"] == cfg.ensemble_horizon  # one rollout of ensemble_horizon states
    with pytest.raises(SystemExit, match="this run's is the 'ensemble' one"):
        main(["dream", str(tmp_path), "--guidance", "sag"])


def test_reward_guidance_without_a_reward_model_fits_one(tiny_hopper_run: Path):
    model, buffer = load(tiny_hopper_run)
    assert model.world_model.reward_model is None
    result = dream(model, buffer, DreamConfig(starts=1, guidance="reward", size=SIZE,
                                              reward_model_steps=5, formats=()))
    assert result.imagination.guidance == "reward" and len(result.clips) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--guidance", "cfg"], "classifier-free guidance needs a world model trained with"),
    (["--sampler-steps", "100"], "sampler_steps 100 exceeds the world model's 8"),
    (["--formats", "html"], "formats with 'html' need 'mp4'"),
    (["--size", "65"], "size must be even"),
])
def test_bad_dream_options_are_one_line_errors(tiny_hopper_run: Path, args: list[str],
                                               message: str, tmp_path: Path):
    with pytest.raises(SystemExit) as exit_:
        main(["dream", str(tiny_hopper_run), "--starts", "1", "--out", str(tmp_path / "d"),
              *args])
    assert message in str(exit_.value) and str(exit_.value).startswith("agdrl: ")


def test_a_folder_without_a_replay_buffer_is_refused(tiny_hopper_run: Path):
    with pytest.raises(SystemExit, match="has no replay buffer to draw start states from"):
        main(["dream", str(tiny_hopper_run / "model")])


def test_dreams_during_training_go_to_tensorboard_and_wandb_and_leave_training_unchanged(
        tmp_path: Path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    wandb = pytest.importorskip("wandb")
    sent: list[tuple[dict, int]] = []

    class Recorder:  # a stand-in for the W&B run
        def log(self, values: dict, step: int) -> None:
            sent.append((values, step))

        def finish(self) -> None:
            pass

    monkeypatch.setattr(wandb, "init", lambda **kwargs: Recorder())
    cfg = dataclasses.replace(PRESETS["tiny"], total_steps=250, eval_every=0, eval_episodes=1)
    plain = AGDMBRL("Hopper-v5", cfg).learn(250)
    dreaming = AGDMBRL("Hopper-v5", dataclasses.replace(cfg, dream_every=100, wandb=True),
                       run_dir=tmp_path).learn(250)
    dreaming.close()
    (video,) = [(values["dream"], step) for values, step in sent if "dream" in values]
    assert isinstance(video[0], wandb.Video) and video[1] == 200
    for a, b in ((plain.agent, dreaming.agent),
                 (plain.world_model.network, dreaming.world_model.network)):
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y)
    # after the 150-step prefill: at 200 only
    assert sorted(p.name for p in (tmp_path / "dreams").iterdir()) == [
        "step_000000200.json", "step_000000200.mp4"]
    assert json.loads((tmp_path / "dreams" / "step_000000200.json").read_text())[
        "during_training"] is True
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    (image,) = events.Images("dream")
    assert image.step == 200 and image.encoded_image_string.startswith(b"GIF89a")
    frames = iio.imread(image.encoded_image_string, index=None)
    assert len(frames) == PRESETS["tiny"].diffusion.horizon
    assert frames.shape[1:3] == (image.height, image.width)


def test_dreams_during_training_need_a_run_directory_and_a_task_they_can_draw():
    cfg = dataclasses.replace(PRESETS["tiny"], dream_every=100)
    with pytest.raises(ConfigError, match="dreams"):
        AGDMBRL("Hopper-v5", cfg).learn(10)
    with pytest.raises(ConfigError, match="dream_every must be non-negative"):
        dataclasses.replace(cfg, dream_every=-1)


def test_rendering_that_cannot_work_is_one_line_saying_what_to_set(tiny_hopper_run: Path,
                                                                    tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    proc = subprocess.run([sys.executable, "-m", "agdrl", "dream", str(tiny_hopper_run),
                           "--starts", "1", "--out", str(tmp_path / "d")],
                          env={**env, "MUJOCO_GL": "glfw"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "agdrl: headless rendering with MUJOCO_GL=glfw failed" in proc.stderr
    assert "MUJOCO_GL=osmesa" in proc.stderr
