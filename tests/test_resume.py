"""Checkpoints that continue a run exactly, written so that a crash never corrupts them."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from agdrl import AGDMBRL, PRESETS
from agdrl.checkpoint import atomic_directory, latest_checkpoint
from agdrl.config import PlannerConfig
from agdrl.faults import RunDirectoryError

TINY = dataclasses.replace(PRESETS["tiny"], prefill_steps=120, pretrain_steps=10, eval_every=100,
                           checkpoint_every=100, keep_checkpoints=3)

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
    for p, q in zip(a.world_model.network.state_dict().values(),
                    b.world_model.network.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert rows(dir_a / "evaluations.csv") == rows(dir_b / "evaluations.csv")
    assert rows(dir_a / "train_metrics.csv") == rows(dir_b / "train_metrics.csv")


@pytest.mark.parametrize("guidance", ["sag", "reward", "sag+student", "none+ensemble",
                                      "none+planner"])
def test_resumed_run_is_the_uninterrupted_run(tmp_path: Path, guidance: str):
    """Stopped after 200 steps and resumed from its checkpoint, a run ends with bit-identical
    weights and the same logged rows as one that was never stopped (CPU, one thread); with a
    distilled student too (its weights and optimizer are part of the checkpoint), for the
    ensemble row (bootstrap subsets, elites and their random stream), and for a run acting
    with the planner (its warm start)."""
    guidance, _, variant = guidance.partition("+")
    student = variant == "student"
    cfg = dataclasses.replace(TINY, imagination=dataclasses.replace(TINY.imagination,
                                                                    guidance=guidance))
    if variant == "ensemble":
        cfg = dataclasses.replace(cfg, world_model="ensemble", elite_every=50,
                                  ensemble=dataclasses.replace(cfg.ensemble, width=32, depth=2))
    if variant == "planner":
        cfg = dataclasses.replace(cfg, act_with_planner=True, planner=PlannerConfig(
            candidates=8, horizon=3, elites=2))
    if student:
        cfg = dataclasses.replace(cfg, diffusion=dataclasses.replace(
            cfg.diffusion, student_steps=1, student_teacher_steps=4))
    whole = AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path / "whole").learn(300)
    AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path / "cut").learn(200).close()
    resumed = AGDMBRL.resume(tmp_path / "cut")
    assert resumed.num_timesteps == 200 and resumed.buffer.size == 200
    start = time.perf_counter()
    resumed.learn(100)
    resumed_call_s = time.perf_counter() - start
    assert_same_run(whole, resumed, tmp_path / "whole", tmp_path / "cut")
    assert_wall_clock_continues(tmp_path / "cut", resumed_call_s)


def assert_wall_clock_continues(run_dir: Path, resumed_call_s: float) -> None:
    """``wall_s`` counts on from the checkpoint instead of restarting at zero (which made a
    resumed run's seconds per env step look smaller than they were): the last row exceeds
    both the row before the cut and the whole duration of the resumed ``learn`` call."""
    with open(run_dir / "evaluations.csv") as f:
        wall = [float(r["wall_s"]) for r in csv.DictReader(f)]
    assert len(wall) == 3 and wall[0] < wall[1] < wall[2], wall
    assert wall[2] > resumed_call_s, (wall, resumed_call_s)


def test_a_fresh_run_in_a_used_folder_is_refused_unless_it_overwrites(tmp_path: Path):
    """A fresh run never writes into another run's folder: refused (the earlier run's files
    untouched), or with overwrite=True (a sweep's retry) the earlier run's files are deleted,
    its checkpoints too, so that pruning and resume only ever see the new run's."""
    AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path).learn(300).close()
    before = (tmp_path / "evaluations.csv").read_text()
    (tmp_path / "log.txt").write_text("a sweep's log, not the run's")
    with pytest.raises(RunDirectoryError, match=r"holds another run .*--overwrite"):
        AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path)
    assert (tmp_path / "evaluations.csv").read_text() == before
    assert checkpoint_steps(tmp_path) == [100, 200, 300]
    AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path, overwrite=True).learn(100).close()
    assert [int(r["env_step"]) for r in rows(tmp_path / "evaluations.csv")] == [100]
    assert not (tmp_path / "train_metrics.csv").exists()  # still in its prefill
    assert checkpoint_steps(tmp_path) == [100]
    assert (tmp_path / "log.txt").exists()
    assert AGDMBRL.resume(tmp_path).num_timesteps == 100


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
    model.close()  # the run directory has one writer at a time
    assert AGDMBRL.resume(tmp_path).num_timesteps == 200
    assert (folder / "skipped-step_000000400").is_dir()  # set aside, never pruned as its own


def test_resume_without_a_checkpoint_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="no complete checkpoint"):
        AGDMBRL.resume(tmp_path)


def test_checkpoint_holds_the_whole_training_state(tmp_path: Path):
    model = AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path).learn(200)
    files = {p.name for p in latest_checkpoint(tmp_path).iterdir()}
    assert files == {"config.json", "world_model.safetensors", "agent.safetensors",
                     "optimizers.safetensors", "buffer.npz", "rng.safetensors",
                     "training_state.json", "manifest.json"}
    model.close()
    loaded = AGDMBRL.resume(tmp_path)
    for opt_a, opt_b in zip(model.optimizers().values(), loaded.optimizers().values(),
                            strict=True):
        sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            for k in sa[i]:
                torch.testing.assert_close(sa[i][k], sb[i][k], rtol=0, atol=0)
    np.testing.assert_array_equal(model.buffer.obs[:200], loaded.buffer.obs[:200])
    assert (loaded.world_model.imagination.policy.log_delta
            == model.world_model.imagination.policy.log_delta)
    # the clock as the checkpoint was written: all the phases, not the write itself
    assert 0 < sum(loaded.clock.seconds.values()) < loaded.elapsed_s <= model.elapsed_s


def test_checkpoint_from_before_elapsed_time_was_saved_resumes_with_the_phase_total(
        tmp_path: Path):
    """Checkpoints of older versions lack ``elapsed_s``: the resumed clock then starts from
    the accounted phases' total instead of from zero."""
    model = AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path).learn(100)
    model.close()
    state_file = latest_checkpoint(tmp_path) / "training_state.json"
    state = json.loads(state_file.read_text())
    del state["elapsed_s"]
    state_file.write_text(json.dumps(state))
    (state_file.parent / "manifest.json").unlink()  # as an older version's folder by hand
    loaded = AGDMBRL.resume(tmp_path)
    assert loaded.elapsed_s == pytest.approx(sum(loaded.clock.seconds.values()))
    assert 0.5 * model.elapsed_s < loaded.elapsed_s <= model.elapsed_s


def _soak_args() -> list[str]:
    """The fault-injection soak's run (benchmarks/soak.py): a few seconds, a checkpoint every
    40 steps."""
    spec = importlib.util.spec_from_file_location(
        "soak", Path(__file__).parents[1] / "benchmarks" / "soak.py")
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    return soak.ARGS


TINY_ARGS = _soak_args()


def run_agdrl(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "agdrl", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, condition, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` as soon as ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"training ended before the kill: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the kill condition never came"
        time.sleep(0.0002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in run.glob("checkpoints/step_*"))


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path: Path):
    """A real training process is killed with SIGKILL three times (at random moments, one of
    them while a checkpoint folder is being written) and resumed each time with
    ``agdrl resume``. Each resume starts at the newest complete checkpoint, no step is
    logged twice, and the final weights and evaluations equal those of a run never killed."""
    run = tmp_path / "killed"
    rng = random.Random(0)
    for trial, after in enumerate((120, 280, 440)):
        proc = run_agdrl(["resume", str(run)] if trial else
                         ["train", "--run-dir", str(run), *TINY_ARGS])
        if trial == 1:
            kill_when(proc, lambda after=after: max(checkpoint_steps(run)) >= after
                      and any(run.glob("checkpoints/.tmp-step_*")))
            assert any(run.glob("checkpoints/.tmp-step_*"))  # a half-written folder is left
        else:
            pause = rng.uniform(0.0, 0.3)
            seen: list[float] = []

            def due(after=after, pause=pause, seen=seen) -> bool:
                if not seen and checkpoint_steps(run) and max(checkpoint_steps(run)) >= after:
                    seen.append(time.monotonic())
                return bool(seen) and time.monotonic() - seen[0] > pause

            kill_when(proc, due)
        # the resume starts at the newest complete checkpoint: what is lost is the work since
        # (under 40 steps, the checkpoint interval, plus a checkpoint that was being written)
        newest = max(checkpoint_steps(run))
        assert newest >= after
        assert AGDMBRL.resume(run).num_timesteps == newest
    done = subprocess.run([sys.executable, "-m", "agdrl", "resume", str(run)],
                          capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert [int(r["env_step"]) for r in rows(run / "evaluations.csv")] == [200, 400, 600]
    logged = [int(r["env_step"]) for r in rows(run / "train_metrics.csv")]
    assert logged == sorted(set(logged)) and logged[-1] == 600  # nothing logged twice

    clean = tmp_path / "clean"
    subprocess.run([sys.executable, "-m", "agdrl", "train", "--run-dir", str(clean),
                    *TINY_ARGS], check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    a, b = AGDMBRL.load(run / "model"), AGDMBRL.load(clean / "model")
    for p, q in zip(a.agent.state_dict().values(), b.agent.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert rows(run / "evaluations.csv") == rows(clean / "evaluations.csv")
