"""Checkpoints that continue a run exactly, written so that a crash never corrupts them."""

from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from agdrl.checkpoint import atomic_directory, latest_checkpoint
from agdrl.config import ActorCriticConfig, DenoiserConfig, DiffusionConfig, ImaginationConfig
from agdrl.trainer import AGDMBRL, TrainConfig

TINY = TrainConfig(
    total_steps=300, prefill_steps=120, pretrain_steps=10, eval_every=100, eval_episodes=2,
    checkpoint_every=100, keep_checkpoints=3,
    diffusion=DiffusionConfig(num_steps=8, batch_size=32,
                              denoiser=DenoiserConfig(width=32, depth=1)),
    agent=ActorCriticConfig(hidden=16),
    imagination=ImaginationConfig(batch_size=32, sampler="ddim", sampler_steps=2))

TIMING = ("wall_s", "env_steps_per_s")


def rows(path: Path) -> list[dict[str, str]]:
    """CSV rows without the wall-clock columns (which differ between runs)."""
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in TIMING
                 and not k.startswith("time_fraction")} for r in csv.DictReader(f)]


def assert_same_run(a: AGDMBRL, b: AGDMBRL, dir_a: Path, dir_b: Path) -> None:
    assert a.num_timesteps == b.num_timesteps
    for (name, p), q in zip(a.agent.state_dict().items(), b.agent.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    for p, q in zip(a.world_model.state_dict().values(), b.world_model.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert rows(dir_a / "evaluations.csv") == rows(dir_b / "evaluations.csv")
    assert rows(dir_a / "train_metrics.csv") == rows(dir_b / "train_metrics.csv")


@pytest.mark.parametrize("guidance", ["sag", "reward"])
def test_resumed_run_is_the_uninterrupted_run(tmp_path: Path, guidance: str):
    """Stopped after 200 steps and resumed from its checkpoint, a run ends with bit-identical
    weights and the same logged rows as one that was never stopped (CPU, one thread)."""
    cfg = dataclasses.replace(TINY, imagination=dataclasses.replace(TINY.imagination,
                                                                    guidance=guidance))
    whole = AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path / "whole").learn(300)
    AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path / "cut").learn(200).close()
    resumed = AGDMBRL.resume(tmp_path / "cut")
    assert resumed.num_timesteps == 200 and resumed.buffer.size == 200
    resumed.learn(100)
    assert_same_run(whole, resumed, tmp_path / "whole", tmp_path / "cut")


def test_resume_drops_what_was_logged_after_the_checkpoint(tmp_path: Path):
    """A run that died after step 250 (logs written up to 250, last checkpoint at 200) resumes
    at 200, logs nothing twice and still matches the uninterrupted run."""
    whole = AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path / "whole").learn(300)
    AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path / "cut").learn(250).close()
    assert [int(r["env_step"]) for r in rows(tmp_path / "cut" / "evaluations.csv")] == \
        [100, 200, 250]  # 250: the end of that learn() call
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step_000000250")
    resumed = AGDMBRL.resume(tmp_path / "cut")
    assert resumed.num_timesteps == 200
    assert [int(r["env_step"]) for r in rows(tmp_path / "cut" / "evaluations.csv")] == \
        [100, 200]
    resumed.learn(100)
    assert_same_run(whole, resumed, tmp_path / "whole", tmp_path / "cut")


def test_an_interrupted_checkpoint_write_leaves_the_previous_one(tmp_path: Path):
    model = AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path).learn(200)
    folder = tmp_path / "checkpoints"

    class Crash(Exception):
        pass

    with pytest.raises(Crash), atomic_directory(folder / "step_000000300") as tmp:
        (tmp / "config.json").write_text("{}")
        raise Crash
    assert latest_checkpoint(tmp_path) == folder / "step_000000200"
    assert not list(folder.glob(".tmp-*"))  # cleaned up on the way out
    # a half-written folder left by a killed process is never taken for a checkpoint
    (folder / ".tmp-step_000000300-999").mkdir()
    (folder / "step_000000400").mkdir()  # no training_state.json: incomplete
    assert latest_checkpoint(tmp_path) == folder / "step_000000200"
    assert AGDMBRL.resume(tmp_path).num_timesteps == 200
    del model


def test_resume_without_a_checkpoint_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="no complete checkpoint"):
        AGDMBRL.resume(tmp_path)


def test_checkpoint_holds_the_whole_training_state(tmp_path: Path):
    model = AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path).learn(200)
    files = {p.name for p in latest_checkpoint(tmp_path).iterdir()}
    assert files == {"config.json", "world_model.safetensors", "agent.safetensors",
                     "optimizers.safetensors", "buffer.npz", "rng.safetensors",
                     "training_state.json"}
    loaded = AGDMBRL.resume(tmp_path)
    for opt_a, opt_b in zip(model._optimizers().values(), loaded._optimizers().values(),
                            strict=True):
        sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            for k in sa[i]:
                torch.testing.assert_close(sa[i][k], sb[i][k], rtol=0, atol=0)
    np.testing.assert_array_equal(model.buffer.obs[:200], loaded.buffer.obs[:200])
    assert loaded.imagination.policy.log_delta == model.imagination.policy.log_delta
