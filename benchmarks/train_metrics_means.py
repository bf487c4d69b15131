"""Means of a run's logged training metrics over env-step windows, for several runs at once
(how docs/learning.md reads the actor's step size and entropy off the runs):

    python benchmarks/train_metrics_means.py results/bench/Hopper-v5/agd-sag/seed0 \\
        results/screen/Hopper-v5/agd-sag-actor-lr1e-4/seed0 --windows 2000:6000 10000:16000 \\
        --out results/screen/Hopper-v5/learner_metrics.json

A window ``A:B`` takes the rows of ``train_metrics.csv`` with A ≤ env_step < B; empty and NaN
entries are left out.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

COLUMNS = ("actor_step_scale", "logp_change", "entropy", "value")


def window_means(run: Path, windows: list[tuple[int, int]], columns: tuple[str, ...]
                 ) -> dict[str, dict[str, float]]:
    """{'A:B': {column: mean}} of ``run``'s train_metrics.csv."""
    with open(run / "train_metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for lo, hi in windows:
        means = {}
        for column in columns:
            values = [float(r[column]) for r in rows
                      if lo <= int(r["env_step"]) < hi and r.get(column) not in (None, "")]
            values = [v for v in values if not math.isnan(v)]
            means[column] = sum(values) / len(values) if values else float("nan")
        out[f"{lo}:{hi}"] = means
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--windows", nargs="+", default=["2000:6000", "10000:16000"])
    p.add_argument("--columns", nargs="+", default=list(COLUMNS))
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    windows = [tuple(int(x) for x in w.split(":")) for w in args.windows]
    result = {str(run): window_means(run, windows, tuple(args.columns)) for run in args.runs}
    for run, by_window in result.items():
        print(run)
        for window, means in by_window.items():
            print(f"  {window}: " + ", ".join(f"{c} {v:.4g}" for c, v in means.items()))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
