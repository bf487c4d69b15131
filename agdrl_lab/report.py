"""Aggregate statistics of a sweep (DESIGN §4): interquartile mean (IQM) with 95% stratified
bootstrap confidence intervals (rliable), learning curves with CI bands, a markdown table.

A run is any folder below ``runs_dir`` with a ``config.json`` and an ``evaluations.csv``
(``agdrl bench`` runs, and hand-made ``agdrl train`` / ``agdrl baseline`` runs alike). A
sweep run is scored under the row its ``bench_run.json`` records, with the fields in which its
config differs from what that row makes today appended when there are any
(:func:`method_label`; such runs are listed); a hand-made run under its folder's name. Sweep
runs that have not finished (their ``bench_run.json`` does not say 'done') are listed, not
scored.

Scores are reported twice, and labelled:
- **raw**: the mean evaluation return of a run at a budget (the evaluation at that env step,
  else the last one before it; a run that stopped before the budget is listed, not scored),
  IQM over seeds per task;
- **normalized**: (R − R_random) / (R_threshold − R_random), with R_random the uniform random
  policy's return under the same evaluation protocol (measured here) and R_threshold
  Gymnasium's ``reward_threshold`` of the task (its "solved" level); aggregated over tasks by
  the IQM of all runs, only over tasks that have a threshold.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import numpy as np
from tqdm import tqdm

from agdrl.config import ConfigError, require, require_positive
from agdrl.dream import KIND as DREAM_KIND
from agdrl.evaluation import random_policy_return
from agdrl.pages import markdown_page
from agdrl.run_log import read_evaluations
from agdrl_lab.bench import METHODS, row_differences


@dataclass(frozen=True)
class ReportConfig:
    """What to aggregate and where to write it."""

    runs_dir: Path = Path("runs/bench")
    """Folder searched recursively for runs (config.json + evaluations.csv)."""
    also: tuple[Path, ...] = ()
    """More folders searched the same way, their runs pooled with RUNS_DIR's (for example a
    slow variant run apart from the sweep it is compared with)."""
    tasks: tuple[str, ...] = ()
    """Only the runs of these tasks (default: every task found)."""
    methods: tuple[str, ...] = ()
    """Only the runs of these methods (default: every method found)."""
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
    avalanche: tuple[Path, ...] = ()
    """Error-avalanche output folders (``agdrl avalanche``: results.json and
    error_vs_horizon.png) whose error-vs-horizon plot and table the report shows."""
    guidance_lift: tuple[Path, ...] = ()
    """Guidance-lift output folders (``benchmarks/guidance_lift.py``: SUMMARY.md) whose
    tables the report shows."""
    dreams: tuple[Path, ...] = ()
    """Folders searched for dreams (``agdrl dream`` outputs) besides the runs' own dreams/
    folders."""
    screenshot: Path | None = None
    """Also open report.html in headless Chromium (the 'browser' extra and the system's
    chromium), say what a reader would miss there, and save a screenshot of the page here."""

    def __post_init__(self):
        require_positive(self, "reps", "random_episodes")
        require(not any(Path(a).resolve().is_relative_to(Path(self.runs_dir).resolve())
                        or Path(self.runs_dir).resolve().is_relative_to(Path(a).resolve())
                        for a in self.also),
                "--also folders must lie outside RUNS_DIR and not contain it (each run "
                "would count twice)")
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
    walls: np.ndarray
    """(E,) wall-clock seconds at the evaluations (NaN where not logged)."""
    folder: Path
    clock_restarted: bool = False
    """Whether ``wall_s`` falls somewhere along the run: a run resumed by agdrl before its
    clock continued from the checkpoint (commit 5d2a373) counted from zero again, so its
    ``wall_s`` is too small and it is left out of the wall-clock column."""
    source: str = "unrecorded"
    """The agdrl commit the run came from (short hash, '+dirty' for uncommitted changes), as
    its ``bench_run.json`` recorded it."""
    parallel: int | None = None
    """How many runs its sweep ran at a time (None: not recorded)."""
    load: float | None = None
    """The machine's mean 1-minute load average while it ran, every job and its own threads
    counted (None: not recorded)."""
    renamed_from: str | None = None
    """The sweep row that made the run, where its config says it is another method."""

    @property
    def wall_s(self) -> float:
        """Wall-clock seconds at the last evaluation."""
        return float(self.walls[-1])

    def _index_at(self, budget: int) -> int | None:
        """The evaluation that stands for ``budget``: the one there, else the last before it;
        None if the run has none or stopped before the budget."""
        before = np.nonzero(self.steps <= budget)[0]
        return int(before[-1]) if len(before) and self.steps[-1] >= budget else None

    def at(self, budget: int) -> float:
        """The return at ``budget`` (NaN if the run has no evaluation by then, or stopped
        before it)."""
        i = self._index_at(budget)
        return float("nan") if i is None else float(self.returns[i])

    def seconds_per_step(self, budget: int) -> float:
        """Wall-clock seconds per env step up to the evaluation that stands for ``budget``."""
        i = self._index_at(budget)
        return float("nan") if i is None else float(self.walls[i] / self.steps[i])


class UnfinishedRun(NamedTuple):
    """A sweep run whose ``bench_run.json`` does not say 'done'."""

    folder: Path
    task: str
    method: str


def find_runs(runs_dir: Path) -> tuple[list[RunCurve], list[UnfinishedRun]]:
    """Every finished run below ``runs_dir`` that has evaluations, and the sweep runs that
    have not finished."""
    runs, unfinished = [], []
    for config_path in sorted(Path(runs_dir).rglob("config.json")):
        folder = config_path.parent
        if not (folder / "evaluations.csv").is_file():
            continue
        rows = read_evaluations(folder)
        if not rows:
            continue
        config = json.loads(config_path.read_text())
        if "env" not in config or "seed" not in config:
            continue  # not a training run (e.g. a world-model benchmark's config)
        status_path = folder / "bench_run.json"
        try:
            status = json.loads(status_path.read_text()) if status_path.is_file() else None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{status_path} is not valid JSON ({err})") from err
        if status and status.get("state") != "done":
            unfinished.append(UnfinishedRun(folder, config["env"],
                                            status.get("method", folder.parent.name)))
            continue
        method, renamed_from = method_label(folder, config, status)
        steps, returns, walls = evaluation_columns(folder / "evaluations.csv", rows)
        runs.append(RunCurve(
            task=config["env"], method=method, seed=int(config["seed"]),
            steps=steps, returns=returns, walls=walls, folder=folder,
            clock_restarted=bool(np.any(np.diff(walls) < 0)),
            source=_source_label((status or {}).get("source")),
            parallel=((status or {}).get("machine") or {}).get("parallel"),
            load=((status or {}).get("load_average") or {}).get("mean"),
            renamed_from=renamed_from))
    return runs, unfinished


def method_label(folder: Path, config: dict, status: dict | None) -> tuple[str, str | None]:
    """The method a run is scored under, and the row it was made by when that differs.

    A sweep run is scored under the row its ``bench_run.json`` records; when the run's config
    differs from what that row makes today (the row's meaning changed since, or the sweep
    added options), under the row followed by the differences, e.g.
    ``mbrl-ensemble [imagination.batch_size=256]``, so that it is never pooled with the row's
    runs of today (a ``bench_run.json`` that does not record its preset is taken to be of
    ``fast``, the preset of every committed spec). A run made by hand is scored under its
    folder's name (the folder above it when it is named ``seedN``)."""
    if status is None:
        named = folder.parent if re.fullmatch(r"seed\d+", folder.name) else folder
        return named.name, None
    try:
        method = status["method"]
    except KeyError:
        raise ConfigError(f"{folder / 'bench_run.json'} does not name its method") from None
    if method not in METHODS:  # a row of a sweep elsewhere: nothing to compare with
        return method, None
    differences = row_differences(method, status.get("preset", "fast"), config)
    if not differences:
        return method, None
    return method + " [" + ", ".join(f"{name}={ours!r}" for name, ours, _ in differences
                                     ) + "]", method


def evaluation_columns(path: Path, rows: list[dict[str, str]]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E,) env steps, mean returns and wall-clock seconds of an ``evaluations.csv``.

    A row whose step or return is missing, unparsable or not finite is refused with the file
    and line named: scoring it would turn the run's IQM, and every aggregate it enters, into
    NaN. ``wall_s`` may be empty (runs that did not log it)."""
    steps, returns, walls = [], [], []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            step, value = int(row["env_step"]), float(row["mean_return"])
            wall = float(row.get("wall_s") or "nan")
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{path}, line {line}: env_step {row.get('env_step')!r} and "
                              f"mean_return {row.get('mean_return')!r} must be an integer and "
                              "a number; fix or remove the row, or leave the run out "
                              "(--tasks, --methods)") from None
        if not np.isfinite(value):
            raise ConfigError(f"{path}, line {line}: mean_return is {row['mean_return']}, "
                              "which cannot be scored; fix or remove the row, or leave the "
                              "run out (--tasks, --methods)")
        steps.append(step), returns.append(value), walls.append(wall)
    return np.array(steps), np.array(returns), np.array(walls)


def _source_label(source: dict | None) -> str:
    """'abc1234', 'abc1234+dirty' or 'unrecorded' from a run's recorded source version."""
    if not source or not source.get("commit"):
        return "unrecorded"
    return source["commit"][:7] + ("+dirty" if source.get("dirty") else "")


def reward_threshold(task: str) -> float | None:
    import gymnasium as gym

    return gym.spec(task).reward_threshold


def iqm_with_ci(scores: dict[str, np.ndarray], reps: int, seed: int
                ) -> dict[str, tuple[float, float, float]]:
    """IQM and its 95% stratified bootstrap interval per method; scores: (runs, tasks).

    Each method's resamples come from a stream seeded with ``seed`` alone, so an interval
    is the same on every call and does not move when another method joins the table.
    rliable's StratifiedBootstrap draws its indices from numpy's global stream and ignores
    its ``random_state``: the global stream is seeded here and given back afterwards."""
    from rliable import library as rly
    from rliable import metrics

    stats = {}
    callers_stream = np.random.get_state()
    try:
        for m, s in scores.items():
            np.random.seed(seed)
            point, interval = rly.get_interval_estimates(
                {m: s}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps)
            stats[m] = (float(point[m][0]), float(interval[m][0, 0]),
                        float(interval[m][1, 0]))
    finally:
        np.random.set_state(callers_stream)
    return stats


def write_report(cfg: ReportConfig, log: Callable[[str], None] = print) -> Path:
    """Write REPORT.md, report.json, one learning-curve PNG per task and report.html (the
    same report as one self-contained page, figures and videos embedded); returns the
    REPORT.md path."""
    try:
        import rliable  # noqa: F401
    except ImportError as err:
        raise ImportError("agdrl report needs rliable: pip install 'agdrl[report]'") from err
    runs, unfinished = [], []
    for root in (cfg.runs_dir, *cfg.also):
        found, not_done = find_runs(root)
        runs, unfinished = runs + found, unfinished + not_done
    runs, unfinished = ([r for r in found if (not cfg.tasks or r.task in cfg.tasks)
                         and (not cfg.methods or r.method in cfg.methods)]
                        for found in (runs, unfinished))
    if not runs:
        raise ConfigError(f"no runs (config.json + evaluations.csv) below {cfg.runs_dir}"
                          + (" of the tasks and methods asked for"
                             if cfg.tasks or cfg.methods else ""))

    def where(folder: Path) -> str:
        """A run's folder, relative to RUNS_DIR where it lies below it."""
        return str(folder.relative_to(cfg.runs_dir) if folder.is_relative_to(cfg.runs_dir)
                   else folder)
    out = cfg.out or cfg.runs_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    by_task: dict[str, dict[str, list[RunCurve]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by_task[run.task][run.method].append(run)
    tasks = sorted(by_task)
    methods = sorted({r.method for r in runs})
    anchors = {}
    for task in tqdm(tasks, desc="random-policy anchors", unit="task", disable=None):
        anchors[task] = {"random": random_policy_return(task, cfg.random_episodes, cfg.seed),
                         "threshold": reward_threshold(task)}
        log(f"{task}: random policy {anchors[task]['random']:.2f}, threshold "
            f"{anchors[task]['threshold']}")

    tables, raw_scores, notes = [], {}, []
    for task in tasks:
        ends = sorted({int(r.steps[-1]) for rs in by_task[task].values() for r in rs})
        if not cfg.budgets and len(ends) > 1:
            notes.append(f"{task}: runs end at {', '.join(map(str, ends))} env steps; the "
                         f"table is at the shortest ({ends[0]}); pass --budgets for others.")
        for budget in cfg.budgets or (ends[0],):
            scores = {m: np.array([[r.at(budget)] for r in rs])
                      for m, rs in by_task[task].items()}
            short = [r for rs in by_task[task].values() for r in rs
                     if not np.isfinite(r.at(budget))]
            if short:
                notes.append(f"{task} at {budget}: not scored (no evaluation by then, or the "
                             "run stopped before): " + ", ".join(
                                 f"{where(r.folder)} (ends at "
                                 f"{int(r.steps[-1])})" for r in short) + ".")
            scores = {m: s[np.isfinite(s[:, 0])] for m, s in scores.items()}
            scores = {m: s for m, s in scores.items() if len(s)}
            if not scores:
                continue
            stats = iqm_with_ci(scores, cfg.reps, cfg.seed)
            raw_scores[f"{task}@{budget}"] = {
                m: {"returns": s[:, 0].tolist(), "seeds": [r.seed for r in by_task[task][m]
                                                           if np.isfinite(r.at(budget))],
                    "iqm": stats[m][0], "ci95": list(stats[m][1:])}
                for m, s in scores.items()}
            tables.append(_raw_table(task, budget, scores, stats, by_task[task], anchors[task]))

    normalized = _normalized(by_task, anchors, cfg)
    restarted = [r for r in runs if r.clock_restarted]
    renamed = [r for r in runs if r.renamed_from]
    if renamed:
        groups: dict[tuple[str, str], list[str]] = {}
        for r in renamed:
            groups.setdefault((r.renamed_from, r.method), []).append(where(r.folder))
        notes.append("Scored apart from the row that made them, their config differing from "
                     "what the row makes today (the row's meaning changed since, or the "
                     "sweep added options): " + "; ".join(
                         f"{before} → {label}: {', '.join(folders)}"
                         for (before, label), folders in groups.items()) + ".")
    for note in notes:
        log(note)
    for task in tqdm(tasks, desc="learning curves", unit="task", disable=None):
        _plot_curves(task, by_task[task], out / f"curves_{task}.png", cfg)

    lines = ["# Benchmark report", "",
             f"Runs below `{cfg.runs_dir}`"
             + "".join(f" and `{a}`" for a in cfg.also)
             + f": {len(runs)} ({len(tasks)} tasks, "
             f"{len(methods)} methods). Made by `agdrl report --runs-dir {cfg.runs_dir}"
             + (f" --also {' '.join(map(str, cfg.also))}" if cfg.also else "")
             + (f" --tasks {' '.join(cfg.tasks)}" if cfg.tasks else "")
             + (f" --methods {' '.join(cfg.methods)}" if cfg.methods else "")
             + (f" --budgets {' '.join(map(str, cfg.budgets))}" if cfg.budgets else "")
             + "".join(f" --{name.replace('_', '-')} {' '.join(map(str, folders))}"
                       for name, folders in (("avalanche", cfg.avalanche),
                                             ("guidance_lift", cfg.guidance_lift),
                                             ("dreams", cfg.dreams)) if folders)
             + "`.", "",
             "IQM = interquartile mean over seeds (with 3 seeds: their mean); [lo, hi] = 95% "
             f"stratified bootstrap interval ({cfg.reps} resamples, rliable). With 3 seeds or "
             "fewer the interval is the range of the seeds, and one seed has none (—): DESIGN "
             "§4 asks for at least 5. Wall-clock per env step (median over seeds, up to the "
             "budget's evaluation, evaluation included) is only comparable between runs made "
             "the same way: same machine, same load (in brackets: the runs its sweep ran at "
             "a time, and the median over seeds of the machine's mean 1-minute load average "
             "while a run ran, where recorded: every job on the machine counts, the run's own "
             "threads included).", "",
             *[line for note in notes for line in (note, "")],
             *([f"Clock restarted at a resume (an agdrl before 5d2a373), so left out of the "
                f"wall-clock column: "
                f"{', '.join(where(r.folder) for r in restarted)}.", ""]
               if restarted else []),
             *([f"Not finished, not scored: "
                f"{', '.join(where(r.folder) for r in unfinished)}.", ""]
               if unfinished else []),
             "## Summary", "",
             "Raw return, IQM [95% CI] (seeds) at each task's last budget in this report; the "
             "tables below have the per-seed returns.", "",
             _summary_table(tasks, methods, raw_scores, anchors), "",
             "## Raw returns", "", *tables]
    if normalized:
        lines += ["## Normalized scores", "",
                  "(R − R_random) / (R_threshold − R_random), R_threshold = Gymnasium's "
                  "reward_threshold; at each task's final budget, IQM over a method's first n "
                  "seeds of every task listed, n the fewest seeds it has on any of them (one "
                  "seed per task has no interval: —).", "", normalized["table"], ""]
    lines += ["## Learning curves", "",
              *[f"![{t}](curves_{t}.png)" for t in tasks], "",
              *_avalanche_section(cfg.avalanche, out),
              *_guidance_lift_section(cfg.guidance_lift),
              *_dreams_section(find_dreams(runs, cfg.dreams), out, where),
              "## Source versions", "",
              "The agdrl commit each run came from, as its `bench_run.json` recorded it "
              "('unrecorded': runs made before agdrl bench recorded it).", "",
              "| task | method | commits (runs) |", "|---|---|---|",
              *[f"| {t} | {m} | " + ", ".join(
                  f"{c} ({n})" for c, n in sorted(Counter(r.source for r in rs).items()))
                + " |" for t in tasks for m, rs in sorted(by_task[t].items())], ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    (out / "report.html").write_text(markdown_page("Benchmark report", "\n".join(lines), out))
    if cfg.screenshot is not None:
        from agdrl_lab.browser import check_page

        problems = check_page(out / "report.html", cfg.screenshot).problems()
        log(f"report.html in Chromium: {'; '.join(problems) or 'no problem'}; screenshot "
            f"{cfg.screenshot}")
    (out / "report.json").write_text(json.dumps({
        "runs_dir": str(cfg.runs_dir), "also": [str(a) for a in cfg.also],
        "anchors": anchors, "raw": raw_scores,
        "normalized": normalized.get("stats", {}),
        "runs": [{"task": r.task, "method": r.method, "seed": r.seed,
                  "folder": where(r.folder),
                  "steps": r.steps.tolist(), "returns": r.returns.tolist(),
                  "wall_s": r.wall_s, "clock_restarted": r.clock_restarted,
                  "source": r.source, "parallel": r.parallel,
                  "renamed_from": r.renamed_from} for r in runs]}, indent=1))
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
        scored = [r for r in runs[m] if np.isfinite(r.at(budget))]
        timed = [r for r in scored
                 if not r.clock_restarted and np.isfinite(r.seconds_per_step(budget))]
        per_step = (f"{1000 * np.median([r.seconds_per_step(budget) for r in timed]):.1f}"
                    if timed else "n/a")
        at_a_time = sorted({r.parallel for r in timed if r.parallel is not None})
        loads = [r.load for r in timed if r.load is not None]
        sharing = ([f"{at_a_time[0]} at a time" if len(at_a_time) == 1 else
                    f"{at_a_time[0]}–{at_a_time[-1]} at a time"] if at_a_time else [])
        sharing += [f"load {np.median(loads):.1f}"] if loads else []
        if sharing:
            per_step += f" [{', '.join(sharing)}]"
        if len(timed) < len(scored):
            per_step += f" ({len(timed)} of {len(scored)} runs)"
        interval = f"[{lo:.1f}, {hi:.1f}]" if len(scores[m]) > 1 else "—"
        lines.append(f"| {m} | {len(scores[m])} | {iqm:.1f} | {interval} | "
                     f"{', '.join(f'{x:.1f}' for x in scores[m][:, 0])} | {per_step} |")
    return "\n".join(lines) + "\n"


def _summary_table(tasks: list[str], methods: list[str], raw_scores: dict,
                   anchors: dict) -> str:
    """Tasks × methods at each task's last scored budget: one line per task, for a README."""
    lines = ["| task (budget) | random | " + " | ".join(methods) + " |",
             "|---" * (len(methods) + 2) + "|"]
    for task in tasks:
        keys = [k for k in raw_scores if k.rpartition("@")[0] == task]
        if not keys:
            continue
        key = max(keys, key=lambda k: int(k.rpartition("@")[2]))
        cells = []
        for m in methods:
            score = raw_scores[key].get(m)
            if score is None:
                cells.append("")
                continue
            n, (lo, hi) = len(score["returns"]), score["ci95"]
            cells.append(f"{score['iqm']:.1f} " + (f"[{lo:.1f}, {hi:.1f}] ({n})" if n > 1
                                                    else "(1)"))
        lines.append(f"| {task} ({key.rpartition('@')[2]}) | {anchors[task]['random']:.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _normalized(by_task: dict, anchors: dict, cfg: ReportConfig) -> dict:
    """IQM over all runs of normalized final scores, over the tasks with a threshold that
    every method in the table has run."""
    tasks = [t for t in sorted(by_task) if anchors[t]["threshold"] is not None]
    if not tasks:
        return {}
    every = sorted({m for t in tasks for m in by_task[t]})
    methods = [m for m in every if all(m in by_task[t] for t in tasks)]
    if not methods:
        return {}
    left_out = [m for m in every if m not in methods]
    no_threshold = [t for t in sorted(by_task) if anchors[t]["threshold"] is None]
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
    lines = [f"Tasks: {', '.join(tasks)}."
             + (f" Left out, for not having run on every one of them: {', '.join(left_out)}."
                if left_out else "")
             + (f" Tasks without a reward threshold, left out: {', '.join(no_threshold)}."
                if no_threshold else ""), "",
             "| method | seeds per task | normalized IQM | 95% CI |", "|---|---|---|---|"]
    for m in sorted(methods, key=lambda m: -stats[m][0]):
        interval = (f"[{stats[m][1]:.3f}, {stats[m][2]:.3f}]" if len(scores[m]) > 1
                    else "—")
        lines.append(f"| {m} | {len(scores[m])} | {stats[m][0]:.3f} | {interval} |")
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


def _relative(path: Path, out: Path) -> str:
    """``path`` as a link from the report's folder (Markdown wants forward slashes)."""
    return quote(Path(os.path.relpath(path.resolve(), out.resolve())).as_posix())


def _avalanche_section(folders: tuple[Path, ...], out: Path) -> list[str]:
    """The error-vs-horizon plot and table of each error-avalanche folder."""
    from agdrl_lab.avalanche import summary_table

    if not folders:
        return []
    lines = ["## World-model error vs horizon", "",
             "Open-loop state error (normalized MSE) of the world models against the simulator "
             "replaying the same actions from the same start states (`agdrl avalanche`).", ""]
    for folder in folders:
        try:
            result = json.loads((folder / "results.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"--avalanche {folder}: no readable results.json ({err})") from err
        figure = folder / "error_vs_horizon.png"
        if not figure.is_file():
            raise ConfigError(f"--avalanche {folder}: no error_vs_horizon.png")
        lines += [f"### {result['config']['env']} ({folder.name})", "",
                  f"![error vs horizon, {folder.name}]({_relative(figure, out)})", "",
                  summary_table(result), ""]
    return lines


def _guidance_lift_section(folders: tuple[Path, ...]) -> list[str]:
    """The tables of each guidance-lift folder, as it wrote them."""
    if not folders:
        return []
    lines = ["## Guidance lift", "",
             "Imagined segments under each guidance from the same start states: mean V, "
             "imagined and replayed return, and dynamics error against the simulator "
             "(`benchmarks/guidance_lift.py`).", ""]
    for folder in folders:
        try:
            summary = (folder / "SUMMARY.md").read_text()
        except OSError as err:
            raise ConfigError(f"--guidance-lift {folder}: no readable SUMMARY.md ({err})") from err
        lines += [f"### {folder.name}", "", summary.strip(), ""]
    return lines


def find_dreams(runs: list[RunCurve], folders: tuple[Path, ...]) -> list[tuple[Path, dict]]:
    """(JSON path, content) of the dreams to show: in each run's dreams/ folder, every one
    ``agdrl dream`` made and the last one logged during training; below each of ``folders``,
    every one."""
    found = []
    for run in runs:
        dreams = _dream_files(run.folder / "dreams")
        during = [d for d in dreams if d[1].get("during_training")]
        found += [d for d in dreams if not d[1].get("during_training")]
        found += sorted(during, key=lambda d: d[1]["env_step"])[-1:]
    for folder in folders:
        found += _dream_files(folder)
    return found


def _dream_files(folder: Path) -> list[tuple[Path, dict]]:
    dreams = []
    for path in sorted(Path(folder).rglob("*.json")):
        try:
            content = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(content, dict) and content.get("kind") == DREAM_KIND:
            dreams.append((path, content))
    return dreams


def _dreams_section(dreams: list[tuple[Path, dict]], out: Path,
                    where: Callable[[Path], str]) -> list[str]:
    """Each dream's description and its video (the GIF in Markdown, which report.html
    replaces by the MP4; a link to the MP4 where there is no GIF)."""
    shown = [(p, d) for p, d in dreams if p.with_suffix(".mp4").is_file()]
    if not shown:
        return []
    lines = ["## Dreams", "",
             "What the world model imagines (left) next to the simulator replaying the same "
             "actions from the same start state (right), with the imagined and real rewards "
             "and the state error (`agdrl dream`; docs/dreams.md says what is imagined).", ""]
    for path, d in shown:
        errors = [c["mean_state_error"] for c in d["clips"]]
        title = f"{d['description']}, {len(d['clips'])} clip{'s' if len(errors) > 1 else ''}"
        media = (f"![{title}]({_relative(path.with_suffix('.gif'), out)})"
                 if path.with_suffix(".gif").is_file()
                 else f"[{title}]({_relative(path.with_suffix('.mp4'), out)})")
        lines += [f"**{where(path.parent)}/{path.stem}**: {title}; mean state error "
                  + ", ".join(f"{e:.4f}" for e in errors)
                  + (" (training-time dream)" if d.get("during_training") else "") + ".", "",
                  media, ""]
    return lines
