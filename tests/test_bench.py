"""Sweeps (agdrl bench): the command of every row, resumability, failure isolation, the
spec file, and a tiny sweep through a local 2-CPU Ray instance."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import agdrl
from agdrl import AGDMBRL, PRESETS, TrainConfig
from agdrl.cli import main, parse
from agdrl.config import ConfigError
from agdrl_lab import bench
from agdrl_lab.baselines import BaselineConfig
from agdrl_lab.bench import (
    METHODS,
    BenchConfig,
    Run,
    execute,
    load_spec,
    plan,
    row_config,
    row_differences,
    run_sweep,
)

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


def test_a_run_differs_from_its_row_only_in_what_changes_what_it_learns():
    """Every row's own config differs from the row in nothing (whatever its seed, budget and
    evaluation protocol); a changed option, a sweep's extra option and a config written before
    a field existed (which keeps its meaning then) are named."""
    for method in METHODS:
        made = row_config(method, "fast", "Hopper-v5", ("--seed", "3", "--eval-every", "7"))
        assert row_differences(method, "fast", dataclasses.asdict(made)) == [], method
    sag = dataclasses.asdict(row_config("agd-sag", "fast", "Hopper-v5"))
    assert row_differences("polygrad", "fast", sag) == [("imagination.guidance", "sag", "none")]
    assert row_differences("agd-sag", "paper", sag) != []  # another preset: another meaning
    ensemble = dataclasses.asdict(row_config("mbrl-ensemble", "fast", "Hopper-v5",
                                             ("--imagination.batch-size", "256")))
    assert row_differences("mbrl-ensemble", "fast", ensemble) == [
        ("imagination.batch_size", 256, 96)]
    del sag["imagination"]["policy_relaxation"], sag["imagination"]["settle_steps"]
    assert row_differences("agd-sag", "fast", sag) == [("imagination.settle_steps", 0, 1)]


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
    monkeypatch.setattr("agdrl_lab.bench.run_sweep", lambda cfg, log: seen.setdefault("cfg", cfg)
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
    load = statuses[0]["load_average"]  # sampled at the start, then every LOAD_SECONDS
    assert load["samples"] >= 1 and 0 <= load["mean"] <= load["max"]
    assert statuses[0]["source"]["agdrl"] == agdrl.__version__
    statuses = run_sweep(bad)
    assert statuses[0]["state"] == "failed" and statuses[0]["returncode"] == 1
    assert "gamma must be in (0, 1]" in statuses[0]["error"]
    # the good run's evaluations exist and its model loads
    folder = tmp_path / "InvertedPendulum-v5" / "polygrad" / "seed0"
    assert (folder / "evaluations.csv").read_text().count("\n") == 3  # header + 2 rows
    assert AGDMBRL.load(folder / "model").num_timesteps == 300
    # resumable: the same sweep again does not run the finished run again
    mtime = (folder / "bench_run.json").stat().st_mtime_ns
    assert [s["state"] for s in run_sweep(good)] == ["done"]
    assert "1 runs, 1 finished already, 0 to run" in capsys.readouterr().out
    # both rows through the CLI with the bad option: the finished run was made without it,
    # so it is stale (kept, not rerun); the failed one is run again and fails again
    code = main(["bench", "--runs-dir", str(tmp_path), "--methods", "polygrad", "agd-sag",
                 "--tasks", "InvertedPendulum-v5", "--seeds", "0", "--total-steps", "300",
                 "--eval-every", "150", "--eval-episodes", "2", "--preset", "tiny",
                 "--", "--agent.gamma", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "2 runs, 0 finished already, 1 to run" in out and "1 stale" in out
    assert "NOT DONE failed" in out and "NOT DONE stale" in out
    assert "make no valid config" in out and "gamma must be in (0, 1]" in out
    assert (folder / "bench_run.json").stat().st_mtime_ns == mtime
    summary = json.loads((tmp_path / "bench.json").read_text())
    assert [r["state"] for r in summary["runs"]] == ["stale", "failed"]
    # bench.json keeps every sweep made in the runs directory, not only the last
    assert [s["methods"] for s in summary["sweeps"]] == [["polygrad"], ["agd-sag"], ["polygrad"],
                                                         ["polygrad", "agd-sag"]]


def test_an_unreadable_bench_json_stops_a_sweep_before_it_runs_anything(tmp_path: Path,
                                                                         monkeypatch):
    (tmp_path / "bench.json").write_text('{"runs": [')
    monkeypatch.setattr("agdrl_lab.bench.execute", lambda run, cfg: pytest.fail("a run executed"))
    with pytest.raises(ConfigError, match=r"bench\.json is not valid JSON"):
        run_sweep(BenchConfig(methods=("polygrad",), runs_dir=tmp_path, **TINY_SWEEP))


def test_sweeps_recording_at_once_keep_each_others_records(tmp_path: Path):
    """Sweeps sharing a runs directory may finish together: each adds its sweep and its
    run to bench.json, and none is lost."""
    import threading

    from agdrl_lab.bench import _record_sweep

    cfg = BenchConfig(methods=("polygrad",), runs_dir=tmp_path, **TINY_SWEEP)
    start = threading.Barrier(8)

    def record(seed: int) -> None:
        start.wait()
        _record_sweep(cfg, [{"task": "T", "method": "m", "seed": seed, "state": "done"}])

    threads = [threading.Thread(target=record, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = json.loads((tmp_path / "bench.json").read_text())
    assert len(summary["sweeps"]) == 8
    assert sorted(r["seed"] for r in summary["runs"]) == list(range(8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.json.lock"]


def test_an_interrupted_model_based_run_resumes_from_its_checkpoint(tmp_path: Path):
    cfg = BenchConfig(methods=("polygrad",), runs_dir=tmp_path, **TINY_SWEEP)
    (run,) = plan(cfg)
    assert run.command(cfg)[:2] == ["train", "tiny"]
    (run.folder / "checkpoints" / "step_000000150").mkdir(parents=True)
    assert run.command(cfg)[:2] == ["resume", str(run.folder)]
    sac = Run("InvertedPendulum-v5", "sac", 0, run.folder)  # model-free runs restart
    assert sac.command(cfg)[0] == "baseline"


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


def finished_run(cfg: BenchConfig, method: str, config: dict | None = None,
                 last_step: int | None = None) -> Run:
    """A run folder that looks finished: status 'done', the config a fresh run of the sweep
    would write (or ``config``), evaluations up to ``last_step`` (default: the budget)."""
    from agdrl.config import resolve_for_task

    (run,) = [r for r in plan(cfg) if r.method == method]
    run.folder.mkdir(parents=True)
    if config is None:
        kind = METHODS[method][0]
        config = dataclasses.asdict(
            resolve_for_task(parse(TrainConfig, run.options(cfg), "agdrl train",
                                   PRESETS[cfg.preset]), run.task) if kind == "train"
            else parse(BaselineConfig, run.options(cfg), "agdrl baseline", BaselineConfig()))
    (run.folder / "config.json").write_text(json.dumps(config))
    (run.folder / "evaluations.csv").write_text(
        f"env_step,mean_return\n{last_step or cfg.total_steps},1.0\n")
    run.status_path.write_text(json.dumps({"task": run.task, "method": method,
                                           "seed": run.seed, "state": "done"}))
    return run


def mark_running(run: Run, pid: int) -> dict:
    """Mark ``run`` as being run by the sweep process ``pid`` on this machine; returns the
    status written."""
    run.folder.mkdir(parents=True, exist_ok=True)
    status = {"task": run.task, "method": run.method, "seed": run.seed, "state": "running",
              "host": platform.node(), "pid": pid}
    run.status_path.write_text(json.dumps(status))
    return status


def test_a_finished_run_of_another_config_is_stale_not_done(tmp_path: Path):
    """A finished run answers a sweep only if its config is the one a fresh run would write
    (task defaults resolved; fields that do not change learning aside) and it reached the
    budget; a run of the row before its meaning changed, or of another budget, does not."""
    cfg = BenchConfig(methods=("agd-sag", "agd-cfg", "mbrl-ensemble", "sac"),
                      runs_dir=tmp_path, **TINY_SWEEP)
    for method in cfg.methods:
        assert finished_run(cfg, method).stale_reason(cfg) is None, method
    shorter = dataclasses.replace(cfg, total_steps=200)  # a longer run is scored at the budget
    assert all(r.stale_reason(shorter) is None for r in plan(shorter))
    longer = dataclasses.replace(cfg, total_steps=600)
    assert plan(longer)[0].stale_reason(longer) == "ends at 300 env steps (sweep: 600)"
    other = dataclasses.replace(cfg, agd_args=("--agent.gamma", "0.9"))
    (sag, cfg_row, ensemble, sac) = plan(other)
    assert sag.stale_reason(other) == "agent.gamma 0.99 (sweep: 0.9)"
    assert sac.stale_reason(other) is None  # extra train options are not the baselines'
    # a run of the row made before relaxation and settle steps existed
    old = json.loads((sag.folder / "config.json").read_text())
    del old["imagination"]["policy_relaxation"], old["imagination"]["settle_steps"]
    (sag.folder / "config.json").write_text(json.dumps(old))
    assert sag.stale_reason(cfg) == ("imagination.policy_relaxation 1.0 (sweep: 0.5); "
                                     "imagination.settle_steps 0 (sweep: 4)")
    # the ensemble row never reads the diffusion model's fields
    old = json.loads((ensemble.folder / "config.json").read_text())
    del old["imagination"]["settle_steps"]
    old["diffusion"]["schedule_tau"] = 0.5
    (ensemble.folder / "config.json").write_text(json.dumps(old))
    assert ensemble.stale_reason(cfg) is None
    (cfg_row.folder / "evaluations.csv").unlink()
    assert "cannot be read" in cfg_row.stale_reason(cfg)


def test_a_sweep_reports_stale_runs_and_leaves_live_ones_to_their_sweep(
        tmp_path: Path, monkeypatch):
    """Stale runs are kept and not rerun; a run another live sweep on this machine marked
    'running' is left to it; one whose sweep died is run; neither counts as done."""
    cfg = BenchConfig(methods=("agd-sag", "polygrad", "agd-eag", "sac"), runs_dir=tmp_path,
                      **TINY_SWEEP)
    stale = finished_run(cfg, "agd-sag", last_step=150)
    (live, dead, _) = [r for r in plan(cfg) if r.method != "agd-sag"]
    mark_running(live, os.getpid())
    mark_running(dead, 2**22 + 1)  # above Linux's pid_max
    executed = []
    monkeypatch.setattr("agdrl_lab.bench.execute", lambda run, cfg: executed.append(run.method)
                        or {"task": run.task, "method": run.method, "seed": run.seed,
                            "state": "failed", "error": "not run in this test"})
    lines = []
    statuses = run_sweep(cfg, log=lines.append)
    assert sorted(executed) == ["agd-eag", "sac"]
    assert lines[0] == ("4 runs, 0 finished already, 2 to run (local processes, 2 at a time), "
                        "1 running in another sweep, 1 stale (kept, not rerun: move them away "
                        "to rerun them)")
    by_method = {s["method"]: s for s in statuses}
    assert by_method["agd-sag"]["state"] == "stale"
    assert by_method["agd-sag"]["error"] == "ends at 150 env steps (sweep: 300)"
    assert by_method["polygrad"]["state"] == "running elsewhere"
    assert json.loads(stale.status_path.read_text())["state"] == "done"  # kept as it was
    assert "NOT DONE stale: InvertedPendulum-v5 agd-sag seed 0" in lines[-1]


def test_a_dry_run_lists_each_runs_state_and_runs_nothing(tmp_path: Path, monkeypatch, capsys):
    """``--dry-run`` names every run done, stale (with why), running elsewhere or to run,
    executes none, writes no bench.json and exits 0 whatever it finds."""
    cfg = BenchConfig(methods=("agd-sag", "polygrad", "agd-eag", "sac"), runs_dir=tmp_path,
                      **TINY_SWEEP)
    finished_run(cfg, "agd-sag", last_step=150)
    finished_run(cfg, "sac")
    mark_running(next(r for r in plan(cfg) if r.method == "polygrad"), os.getpid())
    monkeypatch.setattr("agdrl_lab.bench.execute", lambda run, cfg: pytest.fail("a run executed"))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**{k: list(v) if isinstance(v, tuple) else v
                                   for k, v in TINY_SWEEP.items()},
                                "methods": list(cfg.methods), "runs_dir": str(tmp_path)}))
    assert main(["bench", "--spec", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "stale: InvertedPendulum-v5 agd-sag seed 0: ends at 150 env steps (sweep: 300)",
        "running in another sweep: InvertedPendulum-v5 polygrad seed 0",
        "to run: InvertedPendulum-v5 agd-eag seed 0",
        "done: InvertedPendulum-v5 sac seed 0",
        "4 runs: 1 done, 1 to run, 1 running in another sweep, 1 stale (dry run: nothing "
        "was run)"]
    assert not (tmp_path / "bench.json").exists()
    assert not next(r for r in plan(cfg) if r.method == "agd-eag").folder.exists()


def test_a_run_taken_up_by_another_sweep_after_planning_is_left_to_it(tmp_path: Path,
                                                                      monkeypatch):
    """Two sweeps on one folder plan at start; a queued run that the other sweep has since
    started (its process alive) or finished is not started a second time."""
    cfg = BenchConfig(methods=("agd-sag", "sac"), runs_dir=tmp_path, **TINY_SWEEP)
    taken, finished = plan(cfg)
    running = mark_running(taken, os.getpid())
    finished_run(cfg, "sac")
    monkeypatch.setattr("agdrl_lab.bench.subprocess.run",
                        lambda *a, **k: pytest.fail("a run was started twice"))
    assert execute(taken, cfg) == running
    assert execute(finished, cfg)["state"] == "done"
    assert json.loads(taken.status_path.read_text()) == running  # untouched


def test_the_sweep_progress_counts_the_env_steps_runs_have_evaluated(tmp_path: Path):
    from agdrl_lab.bench import Run, _reached

    cfg = BenchConfig(runs_dir=tmp_path, total_steps=1000)
    run = Run("InvertedPendulum-v5", "sac", 0, tmp_path / "run")
    assert _reached(run, cfg) == 0  # not started
    run.folder.mkdir()
    evaluations = run.folder / "evaluations.csv"
    evaluations.write_text("env_step,mean_return,std_return,episodes,wall_s\n")
    assert _reached(run, cfg) == 0
    with open(evaluations, "a") as f:
        f.write("500,1.0,0.0,10,1.0\n")
    assert _reached(run, cfg) == 500
    with open(evaluations, "a") as f:  # a longer run counts up to the budget only
        f.write("1500,1.0,0.0,10,1.0\n")
    assert _reached(run, cfg) == 1000


def test_a_run_samples_the_load_while_it_runs_and_dies_with_an_interrupted_sweep(monkeypatch):
    monkeypatch.setattr(bench, "LOAD_SECONDS", 0.05)
    loads: list[float] = []
    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    assert bench._wait_sampling_load(quick, loads) == 0
    assert len(loads) >= 3  # at the start, then every 0.05 s for 0.5 s

    calls = iter(range(100))

    def interrupted() -> tuple[float, float, float]:
        if next(calls) == 2:
            raise KeyboardInterrupt
        return (1.0, 1.0, 1.0)

    def unobtainable() -> tuple[float, float, float]:
        raise OSError("Load averages are unobtainable")

    monkeypatch.setattr(bench.os, "getloadavg", unobtainable)  # the run is waited for anyway
    plain = subprocess.Popen([sys.executable, "-c", "pass"])
    assert bench._wait_sampling_load(plain, loads := []) == 0 and loads == []

    monkeypatch.setattr(bench.os, "getloadavg", interrupted)
    slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(KeyboardInterrupt):
        bench._wait_sampling_load(slow, [])
    assert slow.poll() is not None  # killed, not left running


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PYTHONSAFEPATH arrived in Python 3.11")
def test_a_sweep_runs_the_agdrl_it_was_given_not_one_in_the_working_directory(
        tmp_path: Path, monkeypatch):
    """python -m puts the working directory first on sys.path; a sweep started beside an
    agdrl/ folder (an old checkout, say) must still run the installed one (or PYTHONPATH's)."""
    shadow = tmp_path / "elsewhere" / "agdrl"
    shadow.mkdir(parents=True)
    for name in ("__init__.py", "__main__.py"):
        (shadow / name).write_text("raise SystemExit('the shadowing agdrl ran')\n")
    monkeypatch.chdir(shadow.parent)
    bad = BenchConfig(methods=("agd-sag",), runs_dir=tmp_path / "runs",
                      agd_args=("--agent.gamma", "2"), **TINY_SWEEP)
    status = execute(plan(bad)[0], bad)
    assert status["state"] == "failed"
    assert "gamma must be in (0, 1]" in status["error"]  # the real agdrl refused the option
