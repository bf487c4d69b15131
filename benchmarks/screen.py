"""Single-seed screening of training variants: each line of a variants file is
``NAME  agdrl-train-options…``; every variant runs as its own ``agdrl train`` process into
``OUT/TASK/NAME/seedS`` (one after another, skipping finished runs and resuming stopped ones
from their newest checkpoint), and every evaluation is printed; ``--table`` prints a markdown
table of all runs below ``OUT/TASK``.

    python benchmarks/screen.py benchmarks/screens/ip.txt --task InvertedPendulum-v5 \
        --total-steps 5000 --seed 0 --out results/screen
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from agdrl.provenance import source_version


def variants(path: Path) -> list[tuple[str, list[str]]]:
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, *opts = shlex.split(line)
            out.append((name, opts))
    return out


def evaluations(run: Path) -> list[tuple[int, float]]:
    path = run / "evaluations.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [(int(r["env_step"]), float(r["mean_return"])) for r in csv.DictReader(f)]


def table(folder: Path) -> str:
    """Markdown rows of every run below ``folder``: its evaluations, final one last, and the
    commit it ran from."""
    lines = ["| variant | seed | evaluations (every 1000 steps) | final | commit |",
             "|---|---|---|---|---|"]
    for run in sorted(folder.glob("*/seed*")):
        evals = evaluations(run)
        source = run / "source.json"
        commit = json.loads(source.read_text())["commit"][:7] if source.exists() else "—"
        curve = ", ".join(f"{r:.1f}" for _, r in evals)
        final = f"{evals[-1][1]:.1f} at {evals[-1][0]}" if evals else "—"
        lines.append(f"| {run.parent.name} | {run.name[4:]} | {curve} | {final} | {commit} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("variants", type=Path, nargs="?")
    p.add_argument("--task", default="InvertedPendulum-v5")
    p.add_argument("--total-steps", type=int, default=5000)
    p.add_argument("--seed", type=int, nargs="+", default=[0])
    p.add_argument("--out", type=Path, default=Path("results/screen"))
    p.add_argument("--only", nargs="*", help="run only these variant names")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint-every", type=int, default=2500,
                   help="env steps between a run's checkpoints (a stopped run resumes there)")
    p.add_argument("--table", action="store_true",
                   help="print a markdown table of every run under OUT/TASK and run nothing")
    args = p.parse_args()
    if args.table:
        print(table(args.out / args.task))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    for name, opts in variants(args.variants):
        if args.only and name not in args.only:
            continue
        for seed in args.seed:
            run = (args.out / args.task / name / f"seed{seed}").resolve()
            cmd = [sys.executable, "-m", "agdrl", "train", "fast", "--env",
                   args.task, "--seed", str(seed), "--total-steps", str(args.total_steps),
                   "--eval-every", "1000", "--eval-episodes", "10", "--checkpoint-every",
                   str(args.checkpoint_every), "--run-dir", ".", *opts]
            done = evaluations(run)
            if not done or done[-1][0] < args.total_steps:
                resume = any((run / "checkpoints").glob("step_*"))
                if resume:
                    cmd = [sys.executable, "-m", "agdrl", "resume", ".", "--total-steps",
                           str(args.total_steps)]
                else:
                    run.mkdir(parents=True, exist_ok=True)
                    (run / "command.txt").write_text(shlex.join(cmd[1:]) + "\n")
                    (run / "source.json").write_text(json.dumps(source_version()))
                t0 = time.perf_counter()
                with open(run / "log.txt", "a" if resume else "w") as log:
                    # run in the run directory: python -m puts the working directory first
                    # on sys.path, which would shadow an agdrl given by PYTHONPATH
                    rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=run)
                (run / "status.json").write_text(json.dumps(
                    {"returncode": rc, "seconds": round(time.perf_counter() - t0, 1)}))
            print(name, seed, [round(r, 1) for _, r in evaluations(run)], flush=True)


if __name__ == "__main__":
    main()
