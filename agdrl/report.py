"""Aggregate statistics of a sweep (DESIGN §4): interquartile mean (IQM) with 95% stratified
bootstrap confidence intervals (rliable), learning curves with CI bands, a markdown table.

A run is any folder below ``runs_dir`` with a ``config.json`` and an ``evaluations.csv``
(``agdrl bench`` runs, and hand-made ``agdrl train`` / ``agdrl baseline`` runs alike); its
method is read from its ``bench_run.json`` or, failing that, from its config. Sweep runs that
have not finished (their ``bench_run.json`` does not say 'done') are listed, not scored.

Scores are reported twice, and labelled:
- **raw**: the mean evaluation return of a run at a budget (the evaluation at that env step,
  else the last one before it), IQM over seeds per task;
- **normalized**: (R − R_random) / (R_threshold − R_random), with R_random the uniform random
  policy's return under the same evaluation protocol (measured here) and R_threshold
  Gymnasium's ``reward_threshold`` of the task (its "solved" level); aggregated over tasks by
  the IQM of all runs, only over tasks that have a threshold.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agdrl.bench import method_of
from agdrl.config import ConfigError, require, require_positive


@dataclass(frozen=True)
class ReportConfig:
    """What to aggregate and where to write it."""

    runs_dir: Path = Path("runs/bench")
    """Folder searched recursively for runs (config.json + evaluations.csv)."""
    out: Path | None = None
    """Output folder (default: RUNS_DIR/report)."""
    budgets: tuple[int, ...] = ()
    """Env-step budgets of the tables (default: the final budget of each task)."""
    reps: int = 5_000
    """Bootstrap resamples of the confidence intervals."""
    seed: int = 0
    """Seed of the bootstrap and of the random-policy episodes."""
    random_episodes: int = 10
    """Episodes of the uniform random policy that anchor the normalized scores."""

    def __post_init__(self):
        require_positive(self, "reps", "random_episodes")
        require(all(b > 0 for b in self.budgets), f"budgets must be positive, got "
                                                  f"{self.budgets}")


@dataclass
class RunCurve:
    """The evaluations of one run."""

    task: str
    method: str
    seed: int
    steps: np.ndarray
    """(E,) env steps of the evaluations."""
    returns: np.ndarray
    """(E,) mean evaluation returns."""
    wall_s: float
    """Wall-clock seconds at the last evaluation."""
    folder: Path
    clock_restarted: bool = False
    """Whether ``wall_s`` falls somewhere along the run: a run resumed by agdrl before its
    clock continued from the checkpoint (commit 5d2a373) counted from zero again, so its
    ``wall_s`` is too small and it is left out of the wall-clock column."""
    source: str = "unrecorded"
    """The agdrl commit the run came from (short hash, '+dirty' for uncommitted changes), as
    its ``bench_run.json`` recorded it."""

    def at(self, budget: int) -> float:
        """The return at ``budget``: the evaluation there, else the last before it (NaN if
        none)."""
        before = np.nonzero(self.steps <= budget)[0]
        return float(self.returns[before[-1]]) if len(before) else float("nan")


def find_runs(runs_dir: Path) -> tuple[list[RunCurve], list[Path]]:
    """Every finished run below ``runs_dir`` that has evaluations, and the folders of sweep
    runs that have not finished."""
    runs, unfinished = [], []
    for config_path in sorted(Path(runs_dir).rglob("config.json")):
        folder = config_path.parent
        evaluations = folder / "evaluations.csv"
        if not evaluations.is_file():
            continue
        with open(evaluations, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            continue
        config = json.loads(config_path.read_text())
        if "env" not in config or "seed" not in config:
            continue  # not a training run (e.g. a world-model benchmark's config)
        status_path = folder / "bench_run.json"
        try:
            status = json.loads(status_path.read_text()) if status_path.is_file() else None
            method = status["method"] if status else method_of(config)
        except (KeyError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot tell which method made the run in {folder}: "
                              f"{err!r}") from err
        if status and status.get("state") != "done":
            unfinished.append(folder)
            continue
        runs.append(RunCurve(
            task=config["env"], method=method, seed=int(config["seed"]),
            steps=np.array([int(r["env_step"]) for r in rows]),
            returns=np.array([float(r["mean_return"]) for r in rows]),
            wall_s=float(rows[-1].get("wall_s") or "nan"), folder=folder,
            clock_restarted=bool(np.any(np.diff([float(r.get("wall_s") or "nan")
                                                 for r in rows]) < 0)),
            source=_source_label((status or {}).get("source"))))
    return runs, unfinished


def _source_label(source: dict | None) -> str:
    """'abc1234', 'abc1234+dirty' or 'unrecorded' from a run's recorded source version."""
    if not source or not source.get("commit"):
        return "unrecorded"
    return source["commit"][:7] + ("+dirty" if source.get("dirty") else "")


def random_policy_return(task: str, episodes: int, seed: int) -> float:
    """Mean return of uniform random actions under the evaluation protocol."""
    from agdrl.envs import make_env
    from agdrl.trainer import evaluate_policy

    env = make_env(task, seed=seed + 10_000)
    env.action_space.seed(seed)
    returns = evaluate_policy(env, lambda obs: env.action_space.sample(), episodes)
    env.close()
    return float(np.mean(returns))


def reward_threshold(task: str) -> float | None:
    import gymnasium as gym

    return gym.spec(task).reward_threshold


def iqm_with_ci(scores: dict[str, np.ndarray], reps: int, seed: int
                ) -> dict[str, tuple[float, float, float]]:
    """IQM and its 95% stratified bootstrap interval per method; scores: (runs, tasks)."""
    from rliable import library as rly
    from rliable import metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch's RandomState deprecation
        point, interval = rly.get_interval_estimates(
            scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps,
            random_state=np.random.RandomState(seed))
    return {m: (float(point[m][0]), float(interval[m][0, 0]), float(interval[m][1, 0]))
            for m in scores}


def write_report(cfg: ReportConfig, log: Callable[[str], None] = print) -> Path:
    """Write REPORT.md, report.json and one learning-curve PNG per task; returns the
    REPORT.md path."""
    try:
        import rliable  # noqa: F401
    except ImportError as err:
        raise ImportError("agdrl report needs rliable: pip install 'agdrl[report]'") from err
    runs, unfinished = find_runs(cfg.runs_dir)
    if not runs:
        raise ConfigError(f"no runs (config.json + evaluations.csv) below {cfg.runs_dir}")
    out = cfg.out or cfg.runs_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    by_task: dict[str, dict[str, list[RunCurve]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_task[run.task][run.method].append(run)
    tasks = sorted(by_task)
    methods = sorted({r.method for r in runs})
    anchors = {}
    for task in tasks:
        anchors[task] = {"random": random_policy_return(task, cfg.random_episodes, cfg.seed),
                         "threshold": reward_threshold(task)}
        log(f"{task}: random policy {anchors[task]['random']:.2f}, threshold "
            f"{anchors[task]['threshold']}")

    tables, raw_scores = [], {}
    for task in tasks:
        budgets = cfg.budgets or (min(int(r.steps[-1]) for rs in by_task[task].values()
                                      for r in rs),)
        for budget in budgets:
            scores = {m: np.array([[r.at(budget)] for r in rs])
                      for m, rs in by_task[task].items()}
            scores = {m: s[np.isfinite(s[:, 0])] for m, s in scores.items()}
            scores = {m: s for m, s in scores.items() if len(s)}
            stats = iqm_with_ci(scores, cfg.reps, cfg.seed)
            raw_scores[f"{task}@{budget}"] = {
                m: {"returns": s[:, 0].tolist(), "seeds": [r.seed for r in by_task[task][m]
                                                           if np.isfinite(r.at(budget))],
                    "iqm": stats[m][0], "ci95": list(stats[m][1:])}
                for m, s in scores.items()}
            tables.append(_raw_table(task, budget, scores, stats, by_task[task], anchors[task]))

    normalized = _normalized(by_task, anchors, cfg)
    restarted = [r for r in runs if r.clock_restarted]
    for task in tasks:
        _plot_curves(task, by_task[task], out / f"curves_{task}.png", cfg)

    lines = ["# Benchmark report", "",
             f"Runs below `{cfg.runs_dir}`: {len(runs)} ({len(tasks)} tasks, "
             f"{len(methods)} methods). Made by `agdrl report --runs-dir {cfg.runs_dir}"
             + (f" --budgets {' '.join(map(str, cfg.budgets))}" if cfg.budgets else "")
             + "`.", "",
             "IQM = interquartile mean over seeds (with 3 seeds: their mean); [lo, hi] = 95% "
             f"stratified bootstrap interval ({cfg.reps} resamples, rliable). Wall-clock per env "
             "step includes evaluation and is only comparable between runs made the same way "
             "(same machine, same number of parallel runs).", "",
             *([f"Clock restarted at a resume (an agdrl before 5d2a373), so left out of the "
                f"wall-clock column: "
                f"{', '.join(str(r.folder.relative_to(cfg.runs_dir)) for r in restarted)}.", ""]
               if restarted else []),
             *([f"Not finished, not scored: "
                f"{', '.join(str(f.relative_to(cfg.runs_dir)) for f in unfinished)}.", ""]
               if unfinished else []),
             "## Raw returns", "", *tables]
    if normalized:
        lines += ["## Normalized scores", "",
                  "(R − R_random) / (R_threshold − R_random), R_threshold = Gymnasium's "
                  "reward_threshold; IQM over all runs of the tasks listed, at each task's "
                  "final budget.", "", normalized["table"], ""]
    lines += ["## Learning curves", "",
              *[f"![{t}](curves_{t}.png)" for t in tasks], "",
              "## Source versions", "",
              "The agdrl commit each run came from, as its `bench_run.json` recorded it "
              "('unrecorded': runs made before agdrl bench recorded it).", "",
              "| task | method | commits (runs) |", "|---|---|---|",
              *[f"| {t} | {m} | " + ", ".join(
                  f"{c} ({n})" for c, n in sorted(Counter(r.source for r in rs).items()))
                + " |" for t in tasks for m, rs in sorted(by_task[t].items())], ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps({
        "runs_dir": str(cfg.runs_dir), "anchors": anchors, "raw": raw_scores,
        "normalized": normalized.get("stats", {}),
        "runs": [{"task": r.task, "method": r.method, "seed": r.seed,
                  "folder": str(r.folder.relative_to(cfg.runs_dir)),
                  "steps": r.steps.tolist(), "returns": r.returns.tolist(),
                  "wall_s": r.wall_s, "clock_restarted": r.clock_restarted,
                  "source": r.source} for r in runs]}, indent=1))
    return path


def _raw_table(task: str, budget: int, scores: dict[str, np.ndarray],
               stats: dict[str, tuple[float, float, float]],
               runs: dict[str, list[RunCurve]], anchor: dict) -> str:
    lines = [f"### {task} at {budget} env steps (raw return; random policy "
             f"{anchor['random']:.1f})", "",
             "| method | seeds | IQM | 95% CI | per seed | ms per env step |",
             "|---|---|---|---|---|---|"]
    for m in sorted(scores, key=lambda m: -stats[m][0]):
        iqm, lo, hi = stats[m]
        timed = [r.wall_s / r.steps[-1] for r in runs[m] if not r.clock_restarted]
        per_step = f"{1000 * np.median(timed):.1f}" if timed else "n/a"
        if len(timed) < len(runs[m]):
            per_step += f" ({len(timed)} of {len(runs[m])} runs)"
        lines.append(f"| {m} | {len(scores[m])} | {iqm:.1f} | [{lo:.1f}, {hi:.1f}] | "
                     f"{', '.join(f'{x:.1f}' for x in scores[m][:, 0])} | {per_step} |")
    return "\n".join(lines) + "\n"


def _normalized(by_task: dict, anchors: dict, cfg: ReportConfig) -> dict:
    """IQM over all runs of normalized final scores, over the tasks with a threshold that
    every method in the table has run."""
    tasks = [t for t in sorted(by_task) if anchors[t]["threshold"] is not None]
    if not tasks:
        return {}
    methods = [m for m in sorted({m for t in tasks for m in by_task[t]})
               if all(m in by_task[t] for t in tasks)]
    if not methods:
        return {}
    scores = {}
    for m in methods:  # (seeds, tasks): the first n seeds of each task, n the fewest of any
        seeds = min(len(by_task[t][m]) for t in tasks)
        cols = []
        for t in tasks:
            budget = min(int(r.steps[-1]) for rs in by_task[t].values() for r in rs)
            lo, hi = anchors[t]["random"], anchors[t]["threshold"]
            runs = sorted(by_task[t][m], key=lambda r: r.seed)[:seeds]
            cols.append([(r.at(budget) - lo) / (hi - lo) for r in runs])
        scores[m] = np.array(cols).T
    stats = iqm_with_ci(scores, cfg.reps, cfg.seed)
    lines = [f"Tasks: {', '.join(tasks)}.", "",
             "| method | seeds per task | normalized IQM | 95% CI |", "|---|---|---|---|"]
    for m in sorted(methods, key=lambda m: -stats[m][0]):
        lines.append(f"| {m} | {len(scores[m])} | {stats[m][0]:.3f} | "
                     f"[{stats[m][1]:.3f}, {stats[m][2]:.3f}] |")
    return {"table": "\n".join(lines), "stats": {m: list(s) for m, s in stats.items()}}


def _plot_curves(task: str, runs: dict[str, list[RunCurve]], path: Path,
                 cfg: ReportConfig) -> None:
    """IQM over seeds at every evaluation step all seeds reached, with a 95% CI band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in sorted(runs):
        steps = sorted(set.intersection(*(set(r.steps.tolist()) for r in runs[m])))
        if not steps:
            continue
        curve = [iqm_with_ci({m: np.array([[r.at(s)] for r in runs[m]])}, cfg.reps // 5,
                             cfg.seed)[m] for s in steps]
        mid, lo, hi = (np.array(c) for c in zip(*curve, strict=True))
        ax.plot(steps, mid, label=f"{m} ({len(runs[m])} seeds)")
        ax.fill_between(steps, lo, hi, alpha=0.2)
    ax.set(title=task, xlabel="env steps", ylabel="evaluation return (IQM, 95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
