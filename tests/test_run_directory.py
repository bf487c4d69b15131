"""A run directory defends itself: one writer at a time (a lock naming its pid; a killed
holder's lock is stale and taken over), a fresh run never writes into another run's files,
checkpoints are pruned and resumed only from the run's own, Ctrl-C stops cleanly, and eval falls
back past a damaged final model and acts on another task of the same shapes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agdrl import AGDMBRL, PRESETS
from agdrl.checkpoint import latest_checkpoint
from agdrl.cli import main
from agdrl.faults import RunDirectoryError
from agdrl.run_directory import LOCK_FILE, RunDirectory
from agdrl.training_state import write_checkpoint

TINY = dataclasses.replace(PRESETS["tiny"], prefill_steps=120, pretrain_steps=10, eval_every=0,
                           eval_episodes=1, checkpoint_every=50)

HOLD = ("import sys, time; from agdrl.run_directory import RunDirectory; "
        "held = RunDirectory.claim(sys.argv[1], fresh=True); print('held', flush=True); "
        "time.sleep(600)")


def hold_lock(run: Path) -> subprocess.Popen:
    """Another process holding ``run``'s lock."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path):
    run = tmp_path / "run"
    holder = hold_lock(run)
    try:
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid
        with pytest.raises(RunDirectoryError, match=rf"in use by another writer: pid "
                                                    rf"{holder.pid} \(since"):
            AGDMBRL("InvertedPendulum-v5", TINY, run_dir=run)
        assert os.listdir(run) == [LOCK_FILE]  # the refused agent wrote nothing
        with pytest.raises(SystemExit) as exc:
            main(["train", "tiny", "--run-dir", str(run)])
        assert f"pid {holder.pid}" in str(exc.value.code)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed holder's lock file is left behind, stale: the next writer takes it over
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid
    with pytest.warns(UserWarning, match=rf"left by pid {holder.pid}.*taking it over"):
        model = AGDMBRL("InvertedPendulum-v5", TINY, run_dir=run)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    model.close()
    assert not (run / LOCK_FILE).exists()


def test_within_one_process_an_agent_holds_its_directory_until_closed(tmp_path: Path):
    model = AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path).learn(150)
    with pytest.raises(RunDirectoryError, match=r"\(this process\)"):
        AGDMBRL.resume(tmp_path)
    model.close()
    resumed = AGDMBRL.resume(tmp_path)
    assert resumed.num_timesteps == 150
    del resumed  # an agent nobody references gives the directory up when collected
    assert AGDMBRL.resume(tmp_path).num_timesteps == 150


def test_checkpoints_after_the_run_are_never_pruned_as_its_own(tmp_path: Path):
    """A checkpoint numbered after the one being written (a skipped one, or one that should
    not be there) is left alone: pruning only drops the run's older checkpoints."""
    folder = tmp_path / "checkpoints"
    foreign = folder / "step_000000900"
    foreign.mkdir(parents=True)
    for step in (100, 200, 300):
        write_checkpoint(tmp_path, step, 2, lambda f: (f / "training_state.json").write_text("{}"))
    assert sorted(p.name for p in folder.glob("step_*")) == [
        "step_000000200", "step_000000300", "step_000000900"]


def test_resume_sets_a_skipped_damaged_checkpoint_aside(tmp_path: Path):
    AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path).learn(150).close()
    newest = latest_checkpoint(tmp_path)
    (newest / "buffer.npz").write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="skipping checkpoint step_000000150.*buffer.npz"):
        resumed = AGDMBRL.resume(tmp_path)
    assert resumed.num_timesteps == 100
    resumed.learn(100)  # writes 150 and 200 anew, keeping 2
    resumed.close()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["skipped-step_000000150", "step_000000150", "step_000000200"]
    assert AGDMBRL.resume(tmp_path).num_timesteps == 200


def test_eval_falls_back_past_a_damaged_model_and_acts_on_another_task(tmp_path: Path,
                                                                       capsys):
    model = AGDMBRL("InvertedPendulum-v5", TINY, run_dir=tmp_path).learn(150)
    model.save(tmp_path / "model")
    model.close()
    (tmp_path / "model" / "agent.safetensors").write_bytes(b"truncated")
    assert main(["eval", str(tmp_path), "--episodes", "1"]) == 0
    out, err = capsys.readouterr()
    assert "(150 training steps)" in out  # the newest checkpoint's
    assert err.startswith(f"agdrl: warning: skipping saved agent model: {tmp_path / 'model'}: "
                          "agent.safetensors is damaged")
    assert main(["eval", str(tmp_path), "--episodes", "1", "--env",
                 "InvertedPendulum-v4"]) == 0  # the same shapes
    assert capsys.readouterr().out.startswith("InvertedPendulum-v4: mean return")
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(tmp_path), "--env", "Hopper-v5"])
    assert str(exc.value.code).startswith("agdrl: the saved agent was trained on "
                                          "InvertedPendulum-v5 (observation shape (4,)")
    assert "Hopper-v5 has observation shape (11,)" in str(exc.value.code)


def test_ctrl_c_stops_cleanly_with_the_last_checkpoint_intact(tmp_path: Path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agdrl", "train", "tiny", "--run-dir", str(run),
         "--total-steps", "100000", "--prefill-steps", "120", "--pretrain-steps", "10",
         "--eval-every", "0", "--checkpoint-every", "50"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while latest_checkpoint(run) is None or latest_checkpoint(run).name < "step_000000200":
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("agdrl")]
    assert len(lines) == 1 and "Traceback" not in err, err
    last = latest_checkpoint(run)
    assert lines[0].startswith("agdrl: interrupted at env step ")
    assert f"the last checkpoint {last} is intact: 'agdrl resume {run}'" in lines[0]
    assert not (run / LOCK_FILE).exists()
    assert AGDMBRL.resume(run).num_timesteps == int(last.name[5:])


def test_a_directory_that_holds_no_run_is_claimed_with_its_other_files(tmp_path: Path):
    (tmp_path / "log.txt").write_text("a sweep's log")
    claimed = RunDirectory.claim(tmp_path, fresh=True)
    assert claimed.earlier_run() == []
    claimed.release()
    claimed.release()  # idempotent
    assert sorted(os.listdir(tmp_path)) == ["log.txt"]
