"""Benchmark sweeps: methods × tasks × seeds, each run a separate ``agdrl`` process.

Every row of the comparison (DESIGN §3) is a named method: AGD-MBRL and the diffusion
baselines are configurations of ``agdrl train``, the model-free references are
``agdrl baseline`` runs. All rows share the task, seed, env-step budget and evaluation
protocol (``eval_every``, ``eval_episodes``), and get no per-row tuning: the AGD rows run the
chosen preset as it is, the Stable-Baselines3 rows their library defaults.

Runs land in ``RUNS_DIR/TASK/METHOD/seedS`` with their log (``log.txt``) and status
(``bench_run.json``). A sweep is resumable: finished runs are skipped, an AGD run that stopped
part-way continues from its newest checkpoint, other unfinished runs restart, and a run that
another live sweep on this machine is running is left to it. A finished run whose config is
not the one this sweep would write (a row whose meaning changed since, another budget, preset
or option) is *stale*: it is reported and kept, not rerun and not counted as done; move it
away to rerun it. ``dry_run`` lists every run's state and runs none. A run that fails is
reported and the sweep goes on. Runs execute as local processes (``parallel`` at a time,
``threads`` torch threads each) or as Ray Tune trials on a Ray cluster (``ray_address``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated

import gymnasium as gym
import tyro
from tqdm import tqdm

from agdrl.checkpoint import read_json
from agdrl.config import (
    SEED_LIMIT,
    ConfigError,
    config_from_dict,
    require,
    require_finite,
    require_positive,
)
from agdrl.provenance import machine_info, source_version
from agdrl.run_log import read_evaluations

METHODS: dict[str, tuple[str, ...]] = {
    "agd-sag": ("train", "--guidance", "sag"),
    "agd-eag": ("train", "--guidance", "eag"),
    "agd-cfg": ("train", "--guidance", "cfg"),
    "polygrad": ("train", "--guidance", "none"),
    "reward-diffusion": ("train", "--guidance", "reward"),
    "mbrl-ensemble": ("train", "--guidance", "none", "--world-model", "ensemble"),
    "mbrl-ensemble-h30": ("train", "--guidance", "none", "--world-model", "ensemble",
                          "--ensemble-horizon", "30"),
    "sac": ("baseline", "--algo", "sac"),
    "ppo": ("baseline", "--algo", "ppo"),
    "agd-sag-ddpm": ("train", "--guidance", "sag", "--imagination.sampler", "ddpm",
                     "--imagination.sampler-steps", "0"),
    "agd-sag-ddpm8": ("train", "--guidance", "sag", "--imagination.sampler", "ddpm",
                      "--imagination.sampler-steps", "8"),
    "agd-sag-ddim8": ("train", "--guidance", "sag", "--imagination.sampler-steps", "8"),
    "agd-sag-ddim16": ("train", "--guidance", "sag", "--imagination.sampler-steps", "16"),
    "agd-sag-student2": ("train", "--guidance", "sag", "--diffusion.student-steps", "2"),
    "agd-sag-termination": ("train", "--guidance", "sag",
                            "--imagination.experimental.termination", "classifier"),
    "agd-sag-resample": ("train", "--guidance", "sag",
                         "--imagination.experimental.resample-actions"),
    "agd-sag-termination-reward": ("train", "--guidance", "sag",
                                   "--imagination.experimental.termination", "classifier",
                                   "--imagination.experimental.reward", "regressor"),
    "agd-sag-total-c1-last": ("train", "--guidance", "sag", "--imagination.guidance-mode",
                              "total", "--imagination.guidance-scale", "1",
                              "--imagination.guide-last-state"),
    "agd-eag-total-c1-last": ("train", "--guidance", "eag", "--imagination.guidance-mode",
                              "total", "--imagination.guidance-scale", "1",
                              "--imagination.guide-last-state"),
    "agd-sag-actions-total-c1": ("train", "--guidance", "sag", "--imagination.guidance-mode",
                                 "total", "--imagination.guidance-scale", "1",
                                 "--imagination.experimental.guide-actions"),
    "agd-sag-actions-half": ("train", "--guidance", "sag", "--imagination.guidance-mode",
                             "total", "--imagination.guidance-scale", "1",
                             "--imagination.experimental.guide-actions",
                             "--imagination.experimental.steered-fraction", "0.5"),
}
"""The rows of the comparison and the ``agdrl`` command line that makes each one:
AGD-MBRL with sigmoid / exponential / classifier-free advantage guidance; unguided PolyGRAD
and reward-guided diffusion (the basic diffusion rows); the classic MBRL row (the same
actor-critic on policy rollouts of the autoregressive ensemble, of the diffusion segments'
length H = 10 and of 30 steps); Stable-Baselines3 SAC and PPO. Two more rows vary only how
AGD-SAG imagines, to show what speed costs in return: the papers' ancestral sampler over all K
training steps (K = 128 in the presets; the slow variant; ``agd-sag-ddpm8``: the same
ancestral sampler with 8 steps; ``agd-sag-ddim8`` and ``agd-sag-ddim16``: the fast preset's
DDIM with 4 and 8 times its steps) and a 2-step student distilled from
an 8-step DDIM teacher as the model trains (the fastest). ``agd-sag-termination`` takes the
imagined terminal flags from a classifier of real transitions instead of the diffusion model's
terminal channel (``agdrl.termination``); ``agd-sag-termination-reward`` also takes the
imagined rewards from a regression of real transitions (``agdrl.reward_model``).
``agd-sag-resample`` draws the imagined actions again at the chain's final states
(``ImaginationExperiments.resample_actions``). ``agd-sag-total-c1-last`` and
``agd-eag-total-c1-last`` are the advantage guidance that raised the replayed return in the
guidance search (docs/guidance.md): c = 1 in the grid-independent 'total' mode, the last state
of every segment guided. ``agd-sag-actions-total-c1`` guides the actions instead of the
states (``ImaginationExperiments.guide_actions``), SAG at c = 1 in the 'total' mode;
``agd-sag-actions-half`` steers half of the rows that way, and the actor learns only from the
other half (``ImaginationExperiments.steered_fraction``)."""


@functools.lru_cache(maxsize=256)
def row_config(method: str, preset: str, task: str, options: tuple[str, ...] = ()) -> object:
    """The config (``TrainConfig`` resolved for ``task``, or ``BaselineConfig``) that the row
    ``method`` makes today on ``preset``, with ``options`` (``--seed``, ``--total-steps`` …)
    added. ConfigError if they make no valid config. Cached (configs are frozen): a report
    asks once per row and task, not once per run."""
    from agdrl.config import TrainConfig, resolve_for_task
    from agdrl.presets import PRESETS
    from agdrl_lab.baselines import BaselineConfig

    kind, *row = METHODS[method]
    cls, default = ((TrainConfig, PRESETS[preset]) if kind == "train"
                    else (BaselineConfig, BaselineConfig()))
    try:
        config = tyro.cli(cls, args=[*row, "--env", task, *options], default=default)
    except SystemExit as err:
        raise ConfigError(f"the options {[*row, *options]} make no valid config") from err
    return resolve_for_task(config, task) if kind == "train" else config


def row_differences(method: str, preset: str, config: dict) -> list[tuple[str, object, object]]:
    """(field, the run's value, the row's value today) for every field that changes what a run
    learns in which ``config`` (a run's config.json, read as its class reads it: a field it
    lacks means what it meant when it was written) differs from what the row ``method`` makes
    on ``preset``: none for a run the row made since it last changed."""
    expected = row_config(method, preset, config["env"])
    saved = config_from_dict(type(expected), config, "the run's config.json")
    return _learning_differences(saved, expected, MEANING_FREE_FIELDS)


@dataclass(frozen=True)
class BenchConfig:
    """A sweep of methods × tasks × seeds at one env-step budget."""

    tasks: tuple[str, ...] = ("InvertedPendulum-v5",)
    """Gymnasium task ids."""
    methods: tuple[str, ...] = ("agd-sag", "polygrad", "sac")
    """Rows to run; see ``agdrl_lab.bench.METHODS``."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds; each run seeds its algorithm and both environments with it."""
    total_steps: int = 10_000
    """Real environment steps per run."""
    eval_every: int = 1_000
    """Environment steps between evaluations (every row)."""
    eval_episodes: int = 10
    """Episodes per evaluation, deterministic action (every row)."""
    preset: str = "fast"
    """The ``agdrl train`` preset of the model-based rows."""
    agd_args: Annotated[tuple[str, ...], tyro.conf.Suppress] = ()
    """Extra ``agdrl train`` options for the model-based rows (on the command line: after
    ``--``). Anything here is tuning that the model-free rows do not get: say so when
    reporting."""
    checkpoint_every: int = 5_000
    """Checkpoint interval of the model-based rows (an interrupted run resumes from it)."""
    runs_dir: Path = Path("runs/bench")
    """Where the runs go: RUNS_DIR/TASK/METHOD/seedS."""
    parallel: int = 2
    """Runs at a time."""
    threads: int = 1
    """Torch threads per run (parallel × threads should not exceed the cores)."""
    ray_address: str = ""
    """Run through Ray Tune on this cluster ('auto': the running one; 'local': start one on
    this machine with ``parallel`` × ``threads`` CPUs); empty: local processes."""
    dry_run: bool = False
    """Only list what each run would do (done, stale with the fields that differ, running in
    another sweep, to run); run nothing and write nothing."""

    def __post_init__(self):
        require_finite(self)
        require(bool(self.tasks and self.methods and self.seeds),
                "a sweep needs at least one task, method and seed")
        require(all(0 <= s < SEED_LIMIT for s in self.seeds),
                f"seeds must be in [0, 2**32), got {list(self.seeds)}")
        unknown = [m for m in self.methods if m not in METHODS]
        require(not unknown, f"unknown method(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(METHODS)}")
        # Checked here, not when each run starts: a typo would otherwise fail every run of
        # the sweep one by one. 'module:Task-v0' ids register on import, so they pass.
        unregistered = [t for t in self.tasks if ":" not in t and t not in gym.registry]
        require(not unregistered, f"unknown Gymnasium task(s) {', '.join(unregistered)}")
        require_positive(self, "total_steps", "eval_every", "eval_episodes", "parallel",
                         "threads")
        require(self.checkpoint_every >= 0, "checkpoint_every must be ≥ 0")


def load_spec(path: Path) -> BenchConfig:
    """A sweep from a JSON file holding any of :class:`BenchConfig`'s fields (lists for the
    tuples); the others keep their defaults. Every value is checked against its field's type
    before anything runs (ConfigError naming the file and the field)."""
    try:
        spec = read_json(path)
    except ValueError as err:
        raise ConfigError(f"cannot read the sweep spec: {err}") from err
    return config_from_dict(BenchConfig, spec, f"the sweep spec {path}")


@dataclass(frozen=True)
class Run:
    """One run of a sweep."""

    task: str
    method: str
    seed: int
    folder: Path = field(compare=False)

    @property
    def status_path(self) -> Path:
        return self.folder / "bench_run.json"

    def status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def command(self, cfg: BenchConfig) -> list[str]:
        """The ``agdrl`` arguments of this run (a resume if it stopped with a checkpoint)."""
        kind = METHODS[self.method][0]
        if kind == "train" and any((self.folder / "checkpoints").glob("step_*")):
            return ["resume", str(self.folder), "--total-steps", str(cfg.total_steps)]
        # a fresh run replaces what a failed attempt left in its folder
        return [kind, *([cfg.preset, "--overwrite"] if kind == "train" else []),
                *self.options(cfg), "--run-dir", str(self.folder)]

    def options(self, cfg: BenchConfig) -> list[str]:
        """The config options of a fresh run of this row (all but its preset and folder)."""
        kind, *options = METHODS[self.method]
        common = ["--env", self.task, "--seed", str(self.seed), "--total-steps",
                  str(cfg.total_steps), "--eval-every", str(cfg.eval_every),
                  "--eval-episodes", str(cfg.eval_episodes)]
        if kind == "baseline":
            return [*options, *common]
        return [*options, *common, "--checkpoint-every", str(cfg.checkpoint_every),
                *cfg.agd_args]

    def stale_reason(self, cfg: BenchConfig) -> str | None:
        """Why this finished run does not answer the sweep (None if it does): the fields in
        which its config.json differs from the one a fresh run would write, or a last
        evaluation before the budget. A longer run answers (it is scored at the budget)."""
        try:
            sweep_options = self.options(cfg)[len(METHODS[self.method]) - 1:]  # after the row's
            expected = row_config(self.method, cfg.preset, self.task, tuple(sweep_options))
        except ConfigError as err:
            return f"the sweep's options make no valid config ({err})"
        try:
            saved = config_from_dict(type(expected),
                                     json.loads((self.folder / "config.json").read_text()))
            reached = int(read_evaluations(self.folder)[-1]["env_step"])
        except (OSError, ValueError, TypeError, IndexError, KeyError,
                json.JSONDecodeError) as err:
            return f"its config.json or evaluations.csv cannot be read ({err})"
        differences = [f"{name} {ours!r} (sweep: {theirs!r})" for name, ours, theirs
                       in _learning_differences(saved, expected, RUN_ONLY_FIELDS)]
        if reached < cfg.total_steps:
            differences.insert(0, f"ends at {reached} env steps (sweep: {cfg.total_steps})")
        return "; ".join(differences) or None


RUN_ONLY_FIELDS = frozenset({"total_steps", "checkpoint_every", "keep_checkpoints", "device",
                             "video", "dream_every", "wandb", "wandb_project", "check_env"})
"""Config fields that do not change what a run learns, or (total_steps) are checked against
the evaluations it made instead."""


MEANING_FREE_FIELDS = RUN_ONLY_FIELDS | {"env", "seed", "eval_every", "eval_episodes"}
"""Config fields that do not change what a run learns, whatever its sweep: those above, the
task and seed it is scored under and its evaluation protocol."""


def _learning_differences(saved: object, expected: object, ignored: frozenset[str]
                          ) -> list[tuple[str, object, object]]:
    """(field, saved, expected) for every field of two configs that differs, except the
    top-level ``ignored`` ones and those a run of ``expected`` never reads."""
    expected_dict = asdict(expected)
    unused = _unused_fields(expected_dict)
    return [(name, ours, theirs) for name, ours, theirs
            in _differences(asdict(saved), expected_dict)
            if name.split(".")[0] not in ignored and not name.startswith(unused)]


def _unused_fields(config: dict) -> tuple[str, ...]:
    """Prefixes of the config fields a run of this config never reads: the ensemble row
    imagines by policy rollouts, without the diffusion model and its sampler and guidance."""
    if config.get("world_model") != "ensemble":
        return ()
    used = {"batch_size", "advantage", "guidance"}  # its experimental switches are refused
    return ("diffusion.", *(f"imagination.{k}" for k in config["imagination"] if k not in used))


def _differences(ours: dict, theirs: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted name, ours, theirs) for every leaf field in which two config dicts differ."""
    out = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((prefix + key, a, b))
    return out


def plan(cfg: BenchConfig) -> list[Run]:
    """Every run of the sweep: task by task, and within a task seed by seed (so a sweep
    stopped part-way has about as many seeds of every method)."""
    return [Run(task, method, seed, cfg.runs_dir / task / method / f"seed{seed}")
            for task in cfg.tasks for seed in cfg.seeds for method in cfg.methods]


def execute(run: Run, cfg: BenchConfig) -> dict:
    """Run one ``agdrl`` process to completion; returns (and writes) the run's status. Never
    raises for a failed run: the status says what went wrong. A run that another sweep took
    up or finished after this sweep was planned is left to it."""
    current = run.status()
    if current.get("state") == "done" or (current.get("state") == "running" and _alive(current)):
        return current
    run.folder.mkdir(parents=True, exist_ok=True)
    argv = run.command(cfg)
    status = {"task": run.task, "method": run.method, "seed": run.seed, "preset": cfg.preset,
              "command": "agdrl " + " ".join(argv), "state": "running",
              "host": platform.node(), "pid": os.getpid(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "machine": {**machine_info(), "threads": cfg.threads, "parallel": cfg.parallel},
              "source": source_version()}
    run.status_path.write_text(json.dumps(status, indent=1))
    # PYTHONSAFEPATH: python -m would put the working directory first on sys.path, and an
    # agdrl/ there would shadow the one installed or given by PYTHONPATH (a snapshot)
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads),
           "MKL_NUM_THREADS": str(cfg.threads), "PYTHONSAFEPATH": "1"}
    start = time.perf_counter()
    loads: list[float] = []
    with open(run.folder / "log.txt", "a") as log:
        try:
            process = subprocess.Popen([sys.executable, "-m", "agdrl", *argv], stdout=log,
                                       stderr=subprocess.STDOUT, env=env)
            code = _wait_sampling_load(process, loads)
        except OSError as err:
            code, status["error"] = -1, str(err)
    status.update(seconds=round(time.perf_counter() - start, 1), returncode=code,
                  state="done" if code == 0 else "failed")
    if loads:
        status["load_average"] = {"mean": round(sum(loads) / len(loads), 2),
                                  "max": round(max(loads), 2), "samples": len(loads)}
    if code != 0 and "error" not in status:
        status["error"] = last_line(run.folder / "log.txt")
    run.status_path.write_text(json.dumps(status, indent=1))
    return status


LOAD_SECONDS = 15.0
"""How often a sweep samples the machine's 1-minute load average while a run of it runs."""


def _wait_sampling_load(process: subprocess.Popen, loads: list[float]) -> int:
    """Wait for ``process``, appending the machine's 1-minute load average to ``loads`` at its
    start and every :data:`LOAD_SECONDS`; returns its exit code. The load counts every job on
    the machine, the run's own threads included, so a run's wall-clock is comparable with
    another's only at about the same load."""
    try:
        while True:
            # a platform without a load average: the run is waited for all the same
            with contextlib.suppress(OSError, AttributeError):
                loads.append(os.getloadavg()[0])
            try:
                return process.wait(timeout=LOAD_SECONDS)
            except subprocess.TimeoutExpired:
                continue
    except BaseException:  # an interrupted sweep takes its run down with it
        process.kill()
        process.wait()
        raise


def last_line(path: Path) -> str:
    """The last non-empty line of a log (where a failing command says why)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else ""


def run_sweep(cfg: BenchConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Run every unfinished run of the sweep; returns the status of every run (the finished
    ones included) and adds them to RUNS_DIR/bench.json. With ``cfg.dry_run``, only says
    what each run would do (its 'state': done, to run, stale, running elsewhere)."""
    runs = plan(cfg)
    _read_sweeps(cfg.runs_dir / "bench.json")  # unreadable: fail before running
    todo, stale, elsewhere = [], {}, []
    for run in runs:
        status = run.status()
        if status.get("state") == "done":
            reason = run.stale_reason(cfg)
            if reason:
                stale[run] = reason
        elif status.get("state") == "running" and _alive(status):
            elsewhere.append(run)
        else:
            todo.append(run)
    finished = len(runs) - len(todo) - len(stale) - len(elsewhere)
    if cfg.dry_run:
        statuses = [{"task": r.task, "method": r.method, "seed": r.seed,
                     "state": "stale" if r in stale else "running elsewhere" if r in elsewhere
                     else "to run" if r in todo else "done"} for r in runs]
        for run, status in zip(runs, statuses, strict=True):
            label = ("running in another sweep" if status["state"] == "running elsewhere"
                     else status["state"])
            log(f"{label}: {run.task} {run.method} seed {run.seed}"
                + (f": {stale[run]}" if run in stale else ""))
        log(f"{len(runs)} runs: {finished} done, {len(todo)} to run, {len(elsewhere)} running "
            f"in another sweep, {len(stale)} stale (dry run: nothing was run)")
        return statuses
    log(f"{len(runs)} runs, {finished} finished already, {len(todo)} to run "
        f"({'Ray Tune at ' + cfg.ray_address if cfg.ray_address else 'local processes'}, "
        f"{cfg.parallel} at a time)"
        + (f", {len(elsewhere)} running in another sweep" if elsewhere else "")
        + (f", {len(stale)} stale (kept, not rerun: move them away to rerun them)"
           if stale else ""))
    if todo:
        if cfg.ray_address:
            _run_with_ray(todo, cfg, log)
        else:
            _run_locally(todo, cfg, log)
    statuses = [r.status() or {"task": r.task, "method": r.method, "seed": r.seed,
                               "state": "missing"} for r in runs]
    statuses = [{**s, "state": "stale", "error": stale[r]} if r in stale
                else {**s, "state": "running elsewhere", "error": f"pid {s.get('pid')}"}
                if r in elsewhere else s for r, s in zip(runs, statuses, strict=True)]
    _record_sweep(cfg, statuses)
    failed = [s for s in statuses if s.get("state") != "done"]
    log(f"{len(statuses) - len(failed)} of {len(statuses)} runs done"
        + "".join(f"\n  NOT DONE {_describe(s)}" for s in failed))
    return statuses


def _read_sweeps(path: Path) -> tuple[list[dict], dict[tuple[str, str, int], dict]]:
    """The sweeps and the runs' statuses recorded in a runs directory's bench.json (none if
    absent); ConfigError if it cannot be read, so a sweep fails before it runs anything."""
    if not path.is_file():
        return [], {}
    try:
        before = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON ({err}): move it away") from err
    sweeps = before.get("sweeps", [before["config"]] if "config" in before else [])
    return sweeps, {_run_key(s): s for s in before.get("runs", [])}


def _record_sweep(cfg: BenchConfig, statuses: list[dict]) -> None:
    """Add this sweep's config and its runs' statuses to RUNS_DIR/bench.json, which keeps
    every sweep made there and the newest status of every run any of them made. Sweeps that
    share a runs directory take turns (a lock beside it) and the file is replaced whole, so
    none loses another's record and a reader never sees half a file."""
    path = cfg.runs_dir / "bench.json"
    cfg.runs_dir.mkdir(parents=True, exist_ok=True)
    with open(path.with_name("bench.json.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sweeps, runs = _read_sweeps(path)
        sweeps.append({k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path)
                           else v) for k, v in asdict(cfg).items()})
        runs.update({_run_key(s): s for s in statuses})
        tmp = path.with_name(f"bench.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"sweeps": sweeps, "runs": list(runs.values())}, indent=1))
        os.replace(tmp, path)


def _run_key(status: dict) -> tuple[str, str, int]:
    return status["task"], status["method"], int(status["seed"])


def _run_locally(runs: list[Run], cfg: BenchConfig, log: Callable[[str], None]) -> None:
    """``cfg.parallel`` runs at a time as local processes, with a progress bar over the env
    steps of all of them (read from their evaluations, every few seconds)."""
    with ThreadPoolExecutor(cfg.parallel) as pool, \
            tqdm(total=len(runs) * cfg.total_steps, desc="sweep", unit="step",
                 disable=None) as bar:
        pending = {pool.submit(execute, run, cfg) for run in runs}
        while pending:
            finished, pending = wait(pending, timeout=PROGRESS_SECONDS)
            for future in finished:
                log(_describe(future.result()))
            bar.update(sum(_reached(run, cfg) for run in runs) - bar.n)


PROGRESS_SECONDS = 10.0
"""How often the sweep's progress bar reads the runs' evaluations."""


def _reached(run: Run, cfg: BenchConfig) -> int:
    """The env steps a run has evaluated at (capped at the sweep's budget)."""
    try:  # a row being written may be incomplete: then count the run as not started
        return min(int(read_evaluations(run.folder)[-1]["env_step"]), cfg.total_steps)
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return 0


def _alive(status: dict) -> bool:
    """Whether the sweep process that marked a run 'running' still lives on this machine (a
    sweep that was stopped leaves the mark behind; the run is then resumed)."""
    if status.get("host") != platform.node() or not status.get("pid"):
        return False
    try:
        os.kill(int(status["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process of that id
        return True
    return True


def _describe(status: dict) -> str:
    where = f"{status['task']} {status['method']} seed {status['seed']}"
    if status.get("state") == "done":
        return f"done: {where} ({status.get('seconds', 0):.0f} s)"
    return f"{status.get('state', 'missing')}: {where}: {status.get('error', '')}"


def _run_with_ray(runs: list[Run], cfg: BenchConfig, log: Callable[[str], None]) -> None:
    """One Ray Tune trial per run, ``threads`` CPUs each; a trial runs the same process as the
    local mode, so a failed run is a finished trial with state 'failed'."""
    try:
        import ray
        from ray import tune
    except ImportError as err:
        raise ImportError("sweeps on Ray need Ray Tune: pip install 'agdrl[ray]'") from err
    started = not ray.is_initialized()
    if started:
        if cfg.ray_address == "local":
            ray.init(num_cpus=cfg.parallel * cfg.threads, include_dashboard=False,
                     log_to_driver=False)
        else:
            ray.init(address=cfg.ray_address, log_to_driver=False)
    by_key = {f"{r.task}/{r.method}/seed{r.seed}": r for r in runs}
    runs_dir = cfg.runs_dir.resolve()

    def trial(params: dict) -> dict:
        run = by_key[params["run"]]
        run = replace(run, folder=runs_dir / run.folder.relative_to(cfg.runs_dir))
        status = execute(run, replace(cfg, runs_dir=runs_dir))
        return {"state": status["state"], "returncode": status["returncode"]}

    try:
        tuner = tune.Tuner(
            tune.with_resources(trial, {"cpu": cfg.threads}),
            param_space={"run": tune.grid_search(list(by_key))},
            tune_config=tune.TuneConfig(max_concurrent_trials=cfg.parallel),
            run_config=tune.RunConfig(name="bench", storage_path=str(runs_dir / "ray"),
                                      verbose=0))
        for result in tuner.fit():
            if result.error is not None:
                log(f"Ray trial {result.config.get('run')} raised: {result.error}")
    finally:
        if started:
            ray.shutdown()
    for run in runs:
        log(_describe(run.status() or {"task": run.task, "method": run.method,
                                       "seed": run.seed, "state": "missing"}))
