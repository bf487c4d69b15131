"""Learning curves from run directories: mean ± std over seeds per guidance variant.

Reads ``TASK_DIR/GUIDANCE-seedS/evaluations.csv`` (written by ``agdrl train``), writes
``learning_curves.png`` and ``SUMMARY.md`` (a table at every evaluated step) into TASK_DIR.

    .venv/bin/python benchmarks/plot_learning.py results/learning/invertedpendulum-v5
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def read_runs(task_dir: Path) -> dict[str, dict[int, dict[int, float]]]:
    """{variant: {seed: {env_step: mean_return}}} of every run found."""
    runs: dict[str, dict[int, dict[int, float]]] = defaultdict(dict)
    for path in sorted(task_dir.glob("*-seed*/evaluations.csv")):
        match = re.fullmatch(r"(.+)-seed(\d+)", path.parent.name)
        if match is None:
            continue
        with open(path) as f:
            curve = {int(r["env_step"]): float(r["mean_return"]) for r in csv.DictReader(f)}
        runs[match[1]][int(match[2])] = curve
    return runs


def summary(runs: dict[str, dict[int, dict[int, float]]]) -> str:
    steps = sorted({s for seeds in runs.values() for c in seeds.values() for s in c})
    variants = sorted(runs)
    lines = ["| env step | " + " | ".join(f"{v} (n seeds)" for v in variants) + " |",
             "|---|" + "---|" * len(variants)]
    for step in steps:
        cells = []
        for v in variants:
            values = [c[step] for c in runs[v].values() if step in c]
            cells.append(f"{np.mean(values):.1f} ± {np.std(values):.1f} ({len(values)})"
                         if values else "")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task_dir", type=Path)
    args = parser.parse_args()
    runs = read_runs(args.task_dir)
    if not runs:
        raise SystemExit(f"no */evaluations.csv under {args.task_dir}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, seeds in sorted(runs.items()):
        steps = sorted(set.intersection(*(set(c) for c in seeds.values())))
        values = np.array([[c[s] for s in steps] for c in seeds.values()])
        mean, std = values.mean(0), values.std(0)
        ax.plot(steps, mean, label=f"{variant} ({len(seeds)} seeds)")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        for curve in values:
            ax.plot(steps, curve, lw=0.5, alpha=0.4, color=ax.lines[-1].get_color())
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (deterministic)")
    ax.set_title(args.task_dir.name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.task_dir / "learning_curves.png", dpi=120)
    table = summary(runs)
    (args.task_dir / "SUMMARY.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
