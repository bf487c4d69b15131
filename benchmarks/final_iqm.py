"""IQM and 95% stratified bootstrap interval of the final evaluation returns of run folders
that no single runs directory holds together (for example a screen run beside bench runs):

    python benchmarks/final_iqm.py --budget 15000 \\
        --method agd-sag-actions-half results/screen/Hopper-v5/sag-actions-c1-critic-half/seed0 \\
            results/bench/Hopper-v5/agd-sag-actions-half/seed{1,2,3,4} \\
        --method polygrad results/bench/Hopper-v5/polygrad/seed{0,1,2,3,4} \\
        --out results/guidance_learning_half/hopper_five_seeds.json

Each run's score is its last evaluation, which must be at ``--budget`` env steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agdrl.run_log import read_evaluations
from agdrl_lab.report import iqm_with_ci


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", nargs="+", action="append", required=True,
                   metavar=("NAME", "RUN_DIR"), help="a method's name, then its run folders")
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--reps", type=int, default=5000)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    runs = {name: folders for name, *folders in args.method}
    finals = {}
    for name, folders in runs.items():
        finals[name] = []
        for folder in folders:
            last = read_evaluations(Path(folder))[-1]
            if int(last["env_step"]) != args.budget:
                raise SystemExit(f"{folder} ends at {last['env_step']} env steps, "
                                 f"not {args.budget}")
            finals[name].append(float(last["mean_return"]))
    stats = iqm_with_ci({m: np.array(v)[:, None] for m, v in finals.items()}, args.reps, 0)
    result = {"budget": args.budget, "runs": runs, "final_returns": finals,
              "iqm_ci": {m: {"iqm": s[0], "lo": s[1], "hi": s[2]} for m, s in stats.items()}}
    args.out.write_text(json.dumps(result, indent=1))
    for m, (iqm, lo, hi) in stats.items():
        print(f"{m}: IQM {iqm:.1f} [{lo:.1f}, {hi:.1f}] over {len(finals[m])} runs")


if __name__ == "__main__":
    main()
