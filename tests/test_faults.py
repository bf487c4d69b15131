"""Faults: NaN/Inf from the environment or in training, unwritable or full run directories,
and files that must never be loaded (pickles, truncated or corrupted files, other tasks)."""

from __future__ import annotations

import dataclasses
import errno
import json
import pickle
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from agdrl import AGDMBRL, PRESETS
from agdrl.a2c import ActorCriticAgent
from agdrl.buffer import ReplayBuffer
from agdrl.checkpoint import latest_checkpoint
from agdrl.cli import main
from agdrl.config import ActorCriticConfig, EnsembleConfig
from agdrl.ensemble import ProbabilisticEnsemble
from agdrl.envs import IncompatibleEnvError
from agdrl.faults import NonFiniteError, NumericalFaultError, RunDirectoryError
from agdrl.guidance import OneStepAdvantage, SigmoidAdvantage, StateGuidance
from agdrl.reward_model import RewardModel
from agdrl.segments import Segment
from agdrl.termination import TerminationModel

TINY = dataclasses.replace(PRESETS["tiny"], prefill_steps=120, pretrain_steps=10, eval_every=0,
                           checkpoint_every=50)


class InjectNaN(gym.Wrapper):
    """Puts NaN into the observation (or the reward) at the given steps of this env's life."""

    def __init__(self, env: gym.Env, at: set[int], field: str = "obs"):
        super().__init__(env)
        self.at, self.field, self.steps = at, field, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps in self.at:
            if self.field == "obs":
                obs = obs.copy()
                obs[0] = np.nan
            else:
                reward = float("inf")
        return obs, reward, terminated, truncated, info


def nan_env(at: set[int], field: str = "obs") -> tuple[gym.Env, gym.Env]:
    return (InjectNaN(gym.make("InvertedPendulum-v5"), at, field),
            gym.make("InvertedPendulum-v5"))


@pytest.mark.parametrize("field", ["obs", "reward"])
def test_nan_from_the_env_stops_the_run_with_a_good_checkpoint(tmp_path: Path, field: str):
    env, eval_env = nan_env({180}, field)
    model = AGDMBRL(env, TINY, run_dir=tmp_path, eval_env=eval_env)
    with pytest.raises(NumericalFaultError, match=r"environment's observation or reward at "
                                                  r"env step 179.*last good state") as err:
        model.learn(300)
    assert "on_nonfinite='skip'" in str(err.value)
    saved = latest_checkpoint(tmp_path)
    assert saved.name == "step_000000179"
    # the fault's checkpoint keeps the run's clock, which stopped with the fault
    state = json.loads((saved / "training_state.json").read_text())
    assert 0 < sum(state["seconds"].values()) < state["elapsed_s"] <= model.elapsed_s
    stopped = model.elapsed_s
    time.sleep(0.01)
    assert model.elapsed_s == stopped  # the clock does not run outside learn()
    buffer = ReplayBuffer.load(saved / "buffer.npz")
    assert buffer.size == 179 and np.isfinite(buffer.obs[:179]).all()
    assert np.isfinite(buffer.next_obs[:179]).all() and np.isfinite(buffer.rewards[:179]).all()
    model.close()  # the stopped agent gives the run directory up
    resumed = AGDMBRL.resume(tmp_path, env=gym.make("InvertedPendulum-v5"),
                             eval_env=gym.make("InvertedPendulum-v5"))
    resumed.learn(20)  # the saved state trains on
    assert all(torch.isfinite(p).all() for p in resumed.agent.parameters())


def test_skip_mode_drops_the_bad_transitions_and_goes_on(tmp_path: Path):
    env, eval_env = nan_env({50, 180, 181, 250})
    cfg = dataclasses.replace(TINY, on_nonfinite="skip")
    model = AGDMBRL(env, cfg, run_dir=tmp_path, eval_env=eval_env).learn(300)
    assert model.num_timesteps == 300 and model.nonfinite_skipped == 4
    assert model.buffer.size == 296
    assert np.isfinite(model.buffer.next_obs[:296]).all()
    # the env was reset at each bad step: no stored episode runs across a reset
    for start, stop in model.buffer.episode_bounds():
        np.testing.assert_array_equal(model.buffer.next_obs[start : stop - 1],
                                      model.buffer.obs[start + 1 : stop])
    assert all(torch.isfinite(p).all() for p in model.world_model.network.parameters())
    model.close()
    resumed = AGDMBRL.resume(tmp_path, env=gym.make("InvertedPendulum-v5"),
                             eval_env=gym.make("InvertedPendulum-v5"))
    assert resumed.nonfinite_skipped == 4  # the count goes on from the checkpoint


def test_nan_in_a_training_batch_never_reaches_the_weights(world_model_factory, linear_buffer):
    """The world model, the actor-critic and state guidance refuse non-finite input before
    any step: the weights after the refusal are the weights before it."""
    wm = world_model_factory()
    batch = linear_buffer.sample_segments(16, 5, np.random.default_rng(0))
    batch.rewards[3, 2] = np.nan
    before = [p.clone() for p in wm.parameters()]
    with pytest.raises(NonFiniteError, match="diffusion loss"):
        wm.train_step(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, wm.parameters(), strict=True))

    agent = ActorCriticAgent(3, -np.ones(2), np.ones(2), ActorCriticConfig(hidden=8))
    seg = Segment(torch.randn(8, 5, 3), torch.rand(8, 5, 2) * 2 - 1, torch.randn(8, 5),
                  torch.zeros(8, 5))
    seg.states[2, 3, 1] = float("inf")
    before = [p.clone() for p in agent.parameters()]
    with pytest.raises(NonFiniteError, match="imagined segment"):
        agent.update(seg)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.parameters(), strict=True))

    def nan_critic(states: torch.Tensor) -> torch.Tensor:
        return states.sum(-1) * float("nan")

    guidance = StateGuidance(wm, SigmoidAdvantage(OneStepAdvantage(nan_critic)))
    with pytest.raises(NonFiniteError, match="state-guidance gradient"):
        wm.sample(torch.zeros(2, 3), wm.default_sampler("ddim", 4),
                  actions=torch.zeros(2, 5, 2), hook=guidance)


def test_a_non_finite_actor_or_q_gradient_leaves_every_network_unchanged():
    """The actor-critic checks all three gradients before any optimizer steps: a non-finite
    actor or Q-critic gradient from finite losses (so only found after backward) must not
    leave the critic stepped while the actor is not."""
    for net in ("actor", "q_critic"):
        agent = ActorCriticAgent(3, -np.ones(2), np.ones(2), ActorCriticConfig(hidden=8),
                                 learn_q=True)
        seg = Segment(torch.randn(8, 5, 3), torch.rand(8, 5, 2) * 2 - 1, torch.randn(8, 5),
                      torch.zeros(8, 5))
        weight = next(p for p in getattr(agent, net).parameters() if p.dim() > 1)
        hook = weight.register_hook(lambda grad: grad * float("nan"))
        before = [p.clone() for p in agent.parameters()]
        with pytest.raises(NonFiniteError, match="gradient"):
            agent.update(seg)
        assert all(torch.equal(a, b) for a, b in zip(before, agent.parameters(), strict=True))
        hook.remove()
        agent.update(seg)  # the same batch with finite gradients steps every network
        for stepped in (agent.actor, agent.critic, agent.q_critic):
            weight = next(stepped.parameters())
            assert not any(weight is b or torch.equal(weight, b) for b in before)


def test_nan_in_a_transition_batch_never_reaches_the_ensemble_or_the_heads(linear_buffer):
    """The autoregressive ensemble, the reward model and the termination classifier refuse a
    non-finite loss, and a non-finite gradient from a finite loss, before their optimizer
    steps."""
    clean = linear_buffer.sample_transitions(16, np.random.default_rng(0))
    bad = dataclasses.replace(clean, next_states=clean.next_states.copy(),
                              rewards=clean.rewards.copy())
    bad.next_states[5, 0] = np.nan
    bad.rewards[3] = np.inf
    models = {"ensemble": ProbabilisticEnsemble(3, 2, EnsembleConfig(members=2, elites=1,
                                                                      width=8, depth=1)),
              "reward": RewardModel(3, 2, hidden=8),
              "termination": TerminationModel(3, 2, hidden=8)}
    for what, model in models.items():
        before = [p.clone() for p in model.parameters()]
        with pytest.raises(NonFiniteError, match=f"{what}.*loss"):
            model.train_step(bad)
        weight = next(p for p in model.parameters() if p.requires_grad and p.dim() > 1)
        hook = weight.register_hook(lambda grad: grad * float("nan"))
        with pytest.raises(NonFiniteError, match="gradient"):
            model.train_step(clean)
        hook.remove()
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_run_directory_that_cannot_be_written(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RunDirectoryError, match="cannot write to the run directory"):
        AGDMBRL("InvertedPendulum-v5", TINY, run_dir=blocker / "run")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--run-dir", str(blocker / "run"), "--total-steps", "200",
              "--prefill-steps", "100"])
    assert str(exc.value.code).startswith("agdrl: cannot write to the run directory")


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch):
    model = AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path).learn(150)
    assert latest_checkpoint(tmp_path).name == "step_000000150"

    def full_disk(self, path):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ReplayBuffer, "save", full_disk)
    with pytest.raises(RunDirectoryError, match=r"No space left.*step_000000150 is intact"):
        model.learn(50)
    assert latest_checkpoint(tmp_path).name == "step_000000150"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    monkeypatch.undo()
    model.close()
    assert AGDMBRL.resume(tmp_path).num_timesteps == 150


def test_loading_never_runs_code(tmp_path: Path):
    """Every file of a checkpoint is refused, with a message naming it, when it is a pickle,
    is truncated or has corrupted bytes: first by the checksums written with it, and by the
    file formats themselves when the manifest is gone. A crafted pickle never runs."""
    cfg = dataclasses.replace(TINY, keep_checkpoints=1)
    AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path / "run").learn(150)
    good = latest_checkpoint(tmp_path / "run")
    manifest = (good / "manifest.json").read_bytes()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "code ran"))

    crafted = pickle.dumps({"state_dict": Payload()})
    for name in ("agent.safetensors", "world_model.safetensors", "buffer.npz",
                 "optimizers.safetensors", "rng.safetensors"):
        original = (good / name).read_bytes()
        for label, content in (("pickle", crafted), ("truncated", original[: len(original) // 3]),
                               ("corrupted", original[:8] + b"\xff" * 64 + original[72:])):
            (good / name).write_bytes(content)
            for with_manifest in (True, False):
                if not with_manifest:
                    (good / "manifest.json").unlink()
                with pytest.raises(ValueError) as err:
                    AGDMBRL.resume(tmp_path / "run")
                assert name in str(err.value), (name, label, with_manifest, err.value)
                assert ("damaged" in str(err.value)) == with_manifest
                (good / "manifest.json").write_bytes(manifest)
        (good / name).write_bytes(original)
    assert not marker.exists()
    assert AGDMBRL.resume(tmp_path / "run").num_timesteps == 150


def test_damage_in_the_weights_falls_back_to_the_previous_checkpoint(tmp_path: Path):
    """Bytes flipped inside the tensor data (which the safetensors header cannot notice) are
    caught by the checksum; resume warns and continues from the checkpoint before."""
    AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path).learn(150)
    newest = latest_checkpoint(tmp_path)
    data = bytearray((newest / "agent.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (newest / "agent.safetensors").write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="skipping checkpoint step_000000150.*agent.safetensors "
                                         "is damaged"):
        resumed = AGDMBRL.resume(tmp_path)
    assert resumed.num_timesteps == 100


def test_a_checkpoint_of_another_task_names_both_shapes(tmp_path: Path):
    AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path).learn(150)
    with pytest.raises(IncompatibleEnvError, match=r"trained on InvertedPendulum-v5 \(observation "
                       r"shape \(4,\), action shape \(1,\)\), but Hopper-v5 has observation "
                       r"shape \(11,\), action shape \(3,\)"):
        AGDMBRL.load(latest_checkpoint(tmp_path), env="Hopper-v5")
