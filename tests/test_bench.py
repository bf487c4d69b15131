"""Sweeps (agdrl bench): the command of every row, resumability, failure isolation, the
spec file, and a tiny sweep through a local 2-CPU Ray instance."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import agdrl
from agdrl.baselines import BaselineConfig
from agdrl.bench import METHODS, BenchConfig, Run, load_spec, method_of, plan, run_sweep
from agdrl.cli import _parse, main
from agdrl.config import ConfigError
from agdrl.trainer import AGDMBRL, PRESETS, TrainConfig

TINY_SWEEP = dict(tasks=("InvertedPendulum-v5",), seeds=(0,), total_steps=300,
                  eval_every=150, eval_episodes=2, preset="tiny", checkpoint_every=150)


def test_every_row_has_the_same_task_budget_and_protocol(tmp_path: Path):
    cfg = BenchConfig(methods=tuple(METHODS), runs_dir=tmp_path, **TINY_SWEEP)
    runs = plan(cfg)
    assert len(runs) == len(METHODS)
    for run in runs:
        argv = run.command(cfg)
        for option, value in (("--env", "InvertedPendulum-v5"), ("--seed", "0"),
                              ("--total-steps", "300"), ("--eval-every", "150"),
                              ("--eval-episodes", "2")):
            assert argv[argv.index(option) + 1] == value, (run.method, option)
        assert argv[0] == ("baseline" if run.method in ("sac", "ppo") else "train")
        assert run.folder == tmp_path / "InvertedPendulum-v5" / run.method / "seed0"


def test_method_names_round_trip_through_the_run_config():
    """The method a report reads back from a run's config is the row that made it (on the
    preset sweeps use: the tiny one's 8-step model makes 8 ancestral steps its full chain)."""
    for method, (kind, *options) in METHODS.items():
        if kind == "train":
            train_cfg = _parse(TrainConfig, options, PRESETS["fast"], "agdrl train")
            config = dataclasses.asdict(train_cfg)
        else:
            config = dataclasses.asdict(BaselineConfig(algo=options[1]))
        assert method_of(config) == method
    paper = dataclasses.asdict(PRESETS["paper"])
    assert method_of(paper) == "agd-sag-paper"  # not the fast preset's slow-sampler row
    every_step = _parse(TrainConfig, ["--imagination.sampler-steps", "0"], PRESETS["fast"],
                        "agdrl train")
    assert method_of(dataclasses.asdict(every_step)) == "agd-sag-ddim128"  # 0: all K steps
    # hand-made runs that differ from a row in how they imagine are not pooled with it
    for options, name in (
            (["--imagination.sampler", "heun", "--imagination.sampler-steps", "4"],
             "agd-sag-heun4"),
            (["--imagination.sampler-spacing", "trailing"], "agd-sag-trailing"),
            (["--advantage", "gae"], "agd-sag-gae"),
            (["--imagination.guidance-mode", "normalized", "--imagination.guidance-scale", "1"],
             "agd-sag-normalized-c1"),
            (["--imagination.guide-last-state"], "agd-sag-last"),
            (["--guidance", "none", "--advantage", "gae"], "polygrad"),  # no advantage used
            (["--imagination.settle-steps", "0"], "agd-sag-settle0")):
        cfg = _parse(TrainConfig, options, PRESETS["fast"], "agdrl train")
        assert method_of(dataclasses.asdict(cfg)) == name, options
    # a config written before relaxation and settle steps existed: actions replaced each step
    before = dataclasses.asdict(PRESETS["fast"])
    del before["imagination"]["policy_relaxation"], before["imagination"]["settle_steps"]
    assert method_of(before) == "agd-sag-relax1-settle0"


SPECS = sorted((Path(__file__).parents[1] / "benchmarks" / "specs").glob("*.json"))


def test_the_committed_sweep_specs_are_found():
    assert len(SPECS) >= 5


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_committed_sweep_specs_are_valid(spec: Path):
    """Every committed spec names known tasks and methods; model-based sweeps checkpoint so
    that a stopped sweep resumes runs part-way."""
    cfg = load_spec(spec)
    assert cfg.preset in PRESETS and cfg.checkpoint_every > 0
    assert cfg.parallel * cfg.threads <= 2  # the reference machine has 2 cores


def test_bad_sweeps_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown method"):
        BenchConfig(methods=("agd-sag", "dreamer"))
    with pytest.raises(ConfigError, match=r"unknown Gymnasium task.*Hoper-v5"):
        BenchConfig(tasks=("Hopper-v5", "Hoper-v5"))
    with pytest.raises(ConfigError, match="at least one"):
        BenchConfig(seeds=())
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"tasks": ["Hopper-v5"], "sedes": [0]}))
    with pytest.raises(ConfigError, match=r"unknown field.*sedes"):
        load_spec(spec)
    spec.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_spec(spec)


def test_spec_file_with_command_line_overrides(tmp_path: Path, monkeypatch):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"tasks": ["Reacher-v5", "Hopper-v5"], "methods": ["sac"],
                                "seeds": [3, 4], "total_steps": 5000,
                                "runs_dir": str(tmp_path / "runs")}))
    seen = {}
    monkeypatch.setattr("agdrl.bench.run_sweep", lambda cfg, log: seen.setdefault("cfg", cfg)
                        and [])
    assert main(["bench", "--spec", str(spec), "--seeds", "7"]) == 0
    cfg = seen["cfg"]
    assert cfg.tasks == ("Reacher-v5", "Hopper-v5") and cfg.methods == ("sac",)
    assert cfg.seeds == (7,) and cfg.total_steps == 5000
    assert cfg.runs_dir == tmp_path / "runs"


@pytest.mark.slow
def test_local_sweep_isolates_failures_and_resumes(tmp_path: Path, capsys):
    """Two tiny real runs, one of which fails (a bad option): the other finishes, the failure
    is reported with its reason and the exit code says so; a second call skips the finished
    run and reruns only the failed one."""
    good = BenchConfig(methods=("polygrad",), runs_dir=tmp_path, parallel=2, **TINY_SWEEP)
    bad = BenchConfig(methods=("agd-sag",), runs_dir=tmp_path, agd_args=("--agent.gamma", "2"),
                      **TINY_SWEEP)
    statuses = run_sweep(good)
    assert [s["state"] for s in statuses] == ["done"]
    assert statuses[0]["machine"]["threads"] == 1 and statuses[0]["machine"]["parallel"] == 2
    assert statuses[0]["source"]["agdrl"] == agdrl.__version__
    statuses = run_sweep(bad)
    assert statuses[0]["state"] == "failed" and statuses[0]["returncode"] == 1
    assert "gamma must be in (0, 1]" in statuses[0]["error"]
    # the good run's evaluations exist and its model loads
    folder = tmp_path / "InvertedPendulum-v5" / "polygrad" / "seed0"
    assert (folder / "evaluations.csv").read_text().count("\n") == 3  # header + 2 rows
    assert AGDMBRL.load(folder / "model").num_timesteps == 300
    # resumable: rerun both rows through the CLI; the finished one is not run again
    mtime = (folder / "bench_run.json").stat().st_mtime_ns
    code = main(["bench", "--runs-dir", str(tmp_path), "--methods", "polygrad", "agd-sag",
                 "--tasks", "InvertedPendulum-v5", "--seeds", "0", "--total-steps", "300",
                 "--eval-every", "150", "--eval-episodes", "2", "--preset", "tiny",
                 "--", "--agent.gamma", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "2 runs, 1 finished already, 1 to run" in out and "NOT DONE failed" in out
    assert (folder / "bench_run.json").stat().st_mtime_ns == mtime
    summary = json.loads((tmp_path / "bench.json").read_text())
    assert [r["state"] for r in summary["runs"]] == ["done", "failed"]


def test_an_interrupted_model_based_run_resumes_from_its_checkpoint(tmp_path: Path):
    cfg = BenchConfig(methods=("polygrad",), runs_dir=tmp_path, **TINY_SWEEP)
    (run,) = plan(cfg)
    assert "--resume" not in run.command(cfg)
    (run.folder / "checkpoints" / "step_000000150").mkdir(parents=True)
    assert run.command(cfg)[:3] == ["train", "--resume", str(run.folder)]
    sac = Run("InvertedPendulum-v5", "sac", 0, run.folder)  # model-free runs restart
    assert "--resume" not in sac.command(cfg)


@pytest.mark.slow
def test_tiny_sweep_through_a_local_two_cpu_ray_instance(tmp_path: Path):
    """Two tiny runs as Ray Tune trials on a local Ray instance with 2 CPUs, one failing: the
    sweep finishes, the good run's results are where the local mode puts them."""
    pytest.importorskip("ray")
    cfg = BenchConfig(methods=("polygrad", "mbrl-ensemble"), runs_dir=tmp_path / "runs",
                      ray_address="local", parallel=2, threads=1,
                      **{**TINY_SWEEP, "seeds": (0,)})
    bad = Run("InvertedPendulum-v5", "mbrl-ensemble", 0,
              tmp_path / "runs" / "InvertedPendulum-v5" / "mbrl-ensemble" / "seed0")
    bad.folder.mkdir(parents=True)
    (bad.folder / "checkpoints" / "step_000000150").mkdir(parents=True)  # a broken resume
    statuses = run_sweep(cfg, log=lambda msg: None)
    states = {s["method"]: s["state"] for s in statuses}
    assert states == {"polygrad": "done", "mbrl-ensemble": "failed"}
    good = tmp_path / "runs" / "InvertedPendulum-v5" / "polygrad" / "seed0"
    assert (good / "evaluations.csv").read_text().count("\n") == 3
    assert (tmp_path / "runs" / "ray").is_dir()  # Tune's own records
