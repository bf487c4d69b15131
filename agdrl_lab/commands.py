"""The experiments' commands of the ``agdrl`` command line (registered as ``agdrl.commands``
entry points): ``baseline``, ``bench``, ``report`` and ``avalanche``. Each takes the
arguments after its name and returns the exit code."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import tyro

from agdrl.cli import parse, presets_of
from agdrl_lab.avalanche import PRESETS as AVALANCHE_PRESETS
from agdrl_lab.baselines import BaselineConfig
from agdrl_lab.bench import BenchConfig


@dataclasses.dataclass(frozen=True)
class BaselineCommand:
    """A model-free reference row (Stable-Baselines3), evaluated like the agent."""

    config: Annotated[BaselineConfig, tyro.conf.arg(name="")] = dataclasses.field(
        default_factory=BaselineConfig)
    run_dir: Path | None = None
    """The run directory (default: runs/ALGO-ENV-seedSEED)."""


def baseline(args: list[str]) -> int:
    from agdrl_lab.baselines import train_baseline

    cmd = parse(BaselineCommand, args, "agdrl baseline")
    cfg = cmd.config
    run = cmd.run_dir or Path(f"runs/{cfg.algo}-{cfg.env}-seed{cfg.seed}")
    rows = train_baseline(cfg, run)
    print(f"{cfg.algo} on {cfg.env}: final mean return {rows[-1]['mean_return']:.2f} "
          f"({rows[-1]['env_step']} steps); evaluations: {run / 'evaluations.csv'}")
    return 0


@dataclasses.dataclass(frozen=True)
class SpecFile:
    spec: Path | None = None
    """A sweep spec (JSON object of these options): the defaults the other options change."""


@dataclasses.dataclass(frozen=True)
class BenchCommand(SpecFile):
    """A sweep of methods × tasks × seeds at one env-step budget; options after ``--`` go to
    the model-based rows' ``agdrl train``."""

    config: Annotated[BenchConfig, tyro.conf.arg(name="")] = dataclasses.field(
        default_factory=BenchConfig)


def bench(args: list[str]) -> int:
    from agdrl_lab.bench import load_spec, run_sweep

    extra = args[args.index("--") + 1 :] if "--" in args else None
    args = args[: args.index("--")] if "--" in args else args
    found, _ = tyro.cli(SpecFile, args=args, return_unknown_args=True, add_help=False)
    default = BenchCommand(found.spec, load_spec(found.spec) if found.spec else BenchConfig())
    cfg = parse(BenchCommand, args, "agdrl bench", default).config
    if extra is not None:
        cfg = dataclasses.replace(cfg, agd_args=tuple(extra))
    statuses = run_sweep(cfg, log=lambda msg: print(msg, flush=True))
    return 0 if cfg.dry_run or all(s.get("state") == "done" for s in statuses) else 1


def report(args: list[str]) -> int:
    """IQM with bootstrap intervals, curves and a markdown report over a sweep's runs."""
    from agdrl_lab.report import ReportConfig, write_report

    cfg = parse(ReportConfig, args, "agdrl report")
    path = write_report(cfg, log=lambda msg: print(msg, flush=True))
    print(f"report: {path}")
    return 0


AvalanchePreset = presets_of(AVALANCHE_PRESETS)


@dataclasses.dataclass(frozen=True)
class AvalancheCommand:
    """The error-avalanche measurement of the diffusion and autoregressive world models: a
    preset (default when none is named), changed by options."""

    config: AvalanchePreset = AVALANCHE_PRESETS["default"]


def avalanche(args: list[str]) -> int:
    from agdrl_lab.avalanche import run_avalanche

    cmd = parse(AvalancheCommand, args, "agdrl avalanche")
    run_avalanche(cmd.config, log=lambda msg: print(msg, flush=True))
    return 0
