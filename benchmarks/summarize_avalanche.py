"""Summarize error-avalanche results: errors at chosen horizons, the ensemble/diffusion ratio,
and the fewest-step diffusion sampler whose error stays within 10% of the full DDPM chain.

    .venv/bin/python benchmarks/summarize_avalanche.py results/avalanche/*/results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agdrl_lab.avalanche import plot_errors, summary_table


def sampler_steps(name: str, full: int) -> int:
    """'diffusion_ddim:8' -> 8; 'diffusion_ddpm' -> the full chain."""
    spec = name.removeprefix("diffusion_")
    return int(spec.split(":")[1]) if ":" in spec else full


def mean_error(summary: dict) -> float:
    """Mean normalized MSE averaged over the horizons that have data."""
    return float(np.mean([v for v in summary["mean"] if v is not None]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--replot", action="store_true",
                        help="redraw error_vs_horizon.png beside each results.json")
    args = parser.parse_args()
    for path in args.results:
        r = json.loads(path.read_text())
        if args.replot:
            plot_errors(r, path.parent / "error_vs_horizon.png")
        full = r["diffusion_config_resolved"]["num_steps"]
        errors = r["errors"]
        print(f"## {r['config']['env']} ({path})")
        print(f"dataset {r['dataset']['train_transitions']} transitions "
              f"(mean return {r['dataset']['train_mean_return']:.0f}), "
              f"{r['gradient_steps']} gradient steps each, {r['num_starts']} starts, "
              f"train s: diffusion {r['timings_s']['diffusion_train_s']:.0f}, "
              f"ensemble {r['timings_s']['ensemble_train_s']:.0f}")
        print(summary_table(r))

        if "diffusion_ddpm" not in errors:
            print("(no full-chain 'ddpm' sampler in this run: no sampler comparison)\n")
            continue
        ref = mean_error(errors["diffusion_ddpm"])
        last = len(errors["ensemble"]["mean"])
        dif = errors["diffusion_ddpm"]["mean"][last - 1]
        for name in ("ensemble", "ensemble_mean"):
            ens = errors.get(name, {"mean": [None] * last})["mean"][last - 1]
            if ens is not None and dif is not None:
                print(f"h={last}: {name} / diffusion(ddpm) = {ens / dif:.2f}")
        ok = [(sampler_steps(n, full), n, mean_error(e)) for n, e in errors.items()
              if n.startswith("diffusion_") and mean_error(e) <= (1 + args.tolerance) * ref]
        steps, name, err = min(ok)
        print(f"fewest-step sampler within {args.tolerance:.0%} of {full}-step DDPM "
              f"(error averaged over h): {name} ({steps} steps, {err:.4g} vs {ref:.4g})\n")


if __name__ == "__main__":
    main()
