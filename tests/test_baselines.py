"""Model-free reference rows evaluated with the agent's protocol."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from agdrl.cli import main
from agdrl.config import ConfigError
from agdrl_lab import baselines
from agdrl_lab.baselines import BaselineConfig, train_baseline

pytest.importorskip("stable_baselines3")


def test_sac_rows_match_the_agents_evaluation_protocol(tmp_path: Path, monkeypatch):
    cfg = BaselineConfig(algo="sac", total_steps=300, eval_every=100, eval_episodes=2)
    written_at = []  # the curve is on disk after every evaluation, not only at the end
    write = baselines.write_rows
    monkeypatch.setattr(baselines, "write_rows",
                        lambda rows, path: (written_at.append(len(rows)), write(rows, path)))
    rows = train_baseline(cfg, tmp_path)
    assert [r["env_step"] for r in rows] == [100, 200, 300]
    assert written_at == [1, 2, 3]
    with open(tmp_path / "evaluations.csv") as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == ["env_step", "mean_return", "std_return", "episodes", "wall_s"]
    assert [float(r["mean_return"]) for r in written] == [r["mean_return"] for r in rows]
    assert all(r["mean_return"] > 0 for r in rows)  # the pendulum pays 1 per step
    again = train_baseline(cfg, tmp_path / "again")  # same seed, same numbers
    assert [r["mean_return"] for r in again] == [r["mean_return"] for r in rows]


def test_cli_baseline_and_bad_input(tmp_path: Path, capsys):
    assert main(["baseline", "--algo", "ppo", "--total-steps", "200", "--eval-every", "100",
                 "--eval-episodes", "1", "--run-dir", str(tmp_path)]) == 0
    assert "ppo on InvertedPendulum-v5" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="unknown algo"):
        BaselineConfig(algo="td3")
    with pytest.raises(SystemExit, match="agdrl: eval_every exceeds total_steps"):
        main(["baseline", "--total-steps", "10", "--eval-every", "100"])
