"""The experiments' commands of the ``agdrl`` command line (registered as ``agdrl.commands``
entry points): ``baseline``, ``bench``, ``report`` and ``avalanche``. Each takes the
arguments after its name and returns the exit code."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agdrl.cli import parse_config, split_preset, take_option


def baseline(args: list[str]) -> int:
    """A model-free reference row (Stable-Baselines3), evaluated like the agent."""
    from agdrl_lab.baselines import BaselineConfig, train_baseline

    run_dir, rest = take_option(args, "--run-dir", "")
    cfg = parse_config(BaselineConfig, rest, BaselineConfig(), "agdrl baseline [--run-dir DIR]")
    run = Path(run_dir or f"runs/{cfg.algo}-{cfg.env}-seed{cfg.seed}")
    rows = train_baseline(cfg, run)
    print(f"{cfg.algo} on {cfg.env}: final mean return {rows[-1]['mean_return']:.2f} "
          f"({rows[-1]['env_step']} steps); evaluations: {run / 'evaluations.csv'}")
    return 0


def bench(args: list[str]) -> int:
    """A sweep of methods × tasks × seeds; options after ``--`` go to the model-based rows."""
    from agdrl_lab.bench import BenchConfig, load_spec, run_sweep

    extra = args[args.index("--") + 1 :] if "--" in args else None
    args = args[: args.index("--")] if "--" in args else args
    spec, rest = take_option(args, "--spec", "")
    default = load_spec(Path(spec)) if spec else BenchConfig()
    cfg = parse_config(BenchConfig, rest, default, "agdrl bench [--spec FILE.json]")
    if extra is not None:
        cfg = dataclasses.replace(cfg, agd_args=tuple(extra))
    statuses = run_sweep(cfg, log=lambda msg: print(msg, flush=True))
    return 0 if cfg.dry_run or all(s.get("state") == "done" for s in statuses) else 1


def report(args: list[str]) -> int:
    """IQM with bootstrap intervals, curves and a markdown report over a sweep's runs."""
    from agdrl_lab.report import ReportConfig, write_report

    cfg = parse_config(ReportConfig, args, None, "agdrl report")
    path = write_report(cfg, log=lambda msg: print(msg, flush=True))
    print(f"report: {path}")
    return 0


def avalanche(args: list[str]) -> int:
    """The error-avalanche measurement of the diffusion and autoregressive world models."""
    from agdrl_lab.avalanche import PRESETS, AvalancheConfig, run_avalanche

    name, rest = split_preset(args, PRESETS, "default")
    cfg = parse_config(AvalancheConfig, rest, PRESETS[name], f"agdrl avalanche --preset {name}")
    run_avalanche(cfg, log=lambda msg: print(msg, flush=True))
    return 0
