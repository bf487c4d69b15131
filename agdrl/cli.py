"""Command-line interface, generated from the dataclass configs with tyro: ``train``, ``eval``
and ``dream`` here, the experiments' commands from the ``agdrl.commands`` entry points."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro
from gymnasium.error import Error as GymError

from agdrl.config import ConfigError, require_positive
from agdrl.dream import DreamConfig
from agdrl.faults import NumericalFaultError, RunDirectoryError

USAGE = """usage: agdrl COMMAND [--preset NAME] [options]

commands:
  train       train AGD-MBRL online: agdrl train [--preset fast|paper|demo] [--run-dir DIR]
              [--env ID] [--guidance sag|eag|none|reward|cfg] [--seed N] ...
              agdrl train --resume RUN_DIR [--total-steps N]   continue a run
  eval        evaluate a run (its final model, else its latest checkpoint):
              agdrl eval RUN_DIR [--episodes N]
  dream       video of what the world model imagines next to the simulator replaying the same
              actions from the same start states: agdrl dream RUN_DIR [--starts N]
              [--guidance none|sag|eag|reward|cfg] [--sampler ddim --sampler-steps N]
              [--segments N] [--out PATH]
  baseline    a model-free reference row (Stable-Baselines3 SAC or PPO, default settings)
              evaluated like the agent: agdrl baseline --algo sac --env ID --total-steps N
  bench       a sweep of methods × tasks × seeds (resumable; local processes or Ray Tune):
              agdrl bench [--spec FILE.json] [--tasks ID ...] [--methods agd-sag polygrad
              mbrl-ensemble sac ...] [--seeds 0 1 2] [--total-steps N] [--runs-dir DIR]
              [--dry-run: list each run as done, stale, running or to run]
              [-- extra agdrl train options for the model-based rows]
  report      aggregate a sweep: IQM with 95% bootstrap CIs, learning curves, a markdown
              table: agdrl report --runs-dir DIR [--budgets N ...] [--also DIR ...]
              [--tasks ID ...] [--methods NAME ...]
  avalanche   error of the diffusion and autoregressive world models vs open-loop horizon
              presets: demo (about a minute on 2 cores), default, reference (paper-size model)

'agdrl COMMAND --help' lists every option with its default.
"""


def take_option(args: list[str], option: str, default: str) -> tuple[str, list[str]]:
    """Remove ``--option VALUE`` (or ``--option=VALUE``) from args; return its value."""
    value, rest, i = default, [], 0
    while i < len(args):
        if args[i] == option and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif args[i].startswith(option + "="):
            value, i = args[i].split("=", 1)[1], i + 1
        else:
            rest.append(args[i])
            i += 1
    return value, rest


def parse_config(cls: type, args: list[str], default: object, prog: str):
    """tyro parsing whose errors come out as one line: tyro draws a box on stderr and exits 2;
    keep the box's first section (the error itself) and point to --help."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(cls, args=args, default=default, prog=prog)
    except SystemExit as exit_:
        if not exit_.code:
            raise
        message = []
        for line in captured.getvalue().splitlines()[1:]:  # below the box's title
            text = line.strip().strip("│|").strip()
            if text.startswith(("─", "╰", "+")) or (text and set(text) <= set("-")):
                break  # the rule under the error (unicode or ASCII box)
            message.append(text)
        command = prog.split(" [")[0]
        raise SystemExit(f"agdrl: {' '.join(message)} (see '{command} --help')") from None


def split_preset(args: list[str], presets: dict, default: str) -> tuple[str, list[str]]:
    name, rest = take_option(args, "--preset", default)
    if name not in presets:
        raise SystemExit(f"agdrl: unknown preset {name!r}; choose one of {', '.join(presets)}")
    return name, rest


def _train(args: list[str]) -> int:
    from agdrl import distributed
    from agdrl.config import TrainConfig
    from agdrl.presets import PRESETS
    from agdrl.trainer import AGDMBRL

    distributed.init_from_env()  # under torchrun: join the process group

    resume, args = take_option(args, "--resume", "")
    if resume:
        total, rest = take_option(args, "--total-steps", "")
        if rest or (total and not total.isdigit()):
            raise SystemExit("agdrl: usage: agdrl train --resume RUN_DIR [--total-steps N] "
                             "(the rest of the configuration is the run's own)")
        model = AGDMBRL.resume(resume)
        run = Path(resume)
        target = int(total) if total else model.cfg.total_steps
    else:
        run_dir, args = take_option(args, "--run-dir", "")
        name, rest = split_preset(args, PRESETS, "fast")
        cfg = parse_config(TrainConfig, rest, PRESETS[name],
                     f"agdrl train --preset {name} [--run-dir DIR]")
        run = Path(run_dir or f"runs/{cfg.env}-seed{cfg.seed}")
        model = AGDMBRL(cfg.env, cfg, run_dir=run)
        target = cfg.total_steps
    if model.num_timesteps < target:
        model.learn(target - model.num_timesteps, progress_bar=True)
    model.close()
    if distributed.is_main():
        model.save(run / "model")
        print(_summary(model, run))
    distributed.finish()
    return 0


def _summary(model, run: Path) -> str:
    """What a finished ``agdrl train`` learned and where its files are."""
    from agdrl.evaluation import random_policy_return
    from agdrl.run_log import read_evaluations

    cfg = model.cfg
    rows = read_evaluations(run)
    random = random_policy_return(cfg.env, cfg.eval_episodes, cfg.seed)
    first, last = rows[0], rows[-1]
    return (f"{cfg.env}: evaluation return {float(first['mean_return']):.1f} at step "
            f"{first['env_step']} -> {float(last['mean_return']):.1f} at step "
            f"{last['env_step']} (mean of {last['episodes']} deterministic episodes; a random "
            f"policy: {random:.1f})\n"
            f"run directory: {run} ({model.num_timesteps} env steps)\n"
            f"  learning curve: {run / 'evaluations.csv'}\n"
            f"  TensorBoard: tensorboard --logdir {run / 'tensorboard'}\n"
            f"  model: {run / 'model'} (agdrl eval {run})")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluate a run's agent: its final model, else its latest checkpoint."""

    run_dir: tyro.conf.Positional[Path]
    """The run directory (or a saved model's folder)."""
    episodes: int = 20
    """Deterministic episodes."""

    def __post_init__(self):
        require_positive(self, "episodes")


def saved_agent(run: Path) -> Path:
    """The folder of a run's final model, else of its latest checkpoint (a run that has not
    finished), else ``run`` itself (a saved model's or a checkpoint's folder)."""
    checkpoints = sorted((run / "checkpoints").glob("step_*"))
    return run / "model" if (run / "model").is_dir() else checkpoints[-1] if checkpoints else run


def _eval(args: list[str]) -> int:
    from agdrl.trainer import AGDMBRL

    cfg = parse_config(EvalConfig, args, None, "agdrl eval")
    model = AGDMBRL.load(saved_agent(cfg.run_dir))
    returns = model.evaluate(cfg.episodes)
    print(f"{model.cfg.env}: mean return {np.mean(returns):.2f} ± {np.std(returns):.2f} over "
          f"{len(returns)} episodes ({model.num_timesteps} training steps)")
    return 0


@dataclasses.dataclass(frozen=True)
class DreamCommand:
    """Draw what a run's world model imagines from start states of its replay buffer, next to
    the simulator replaying the same actions from the same states (MP4, GIF, HTML, JSON)."""

    run_dir: tyro.conf.Positional[Path]
    """The run directory: its final model (else its latest checkpoint) and the replay buffer
    of its latest checkpoint; or a checkpoint's folder."""
    out: Path | None = None
    """Where to write, without suffix (default: RUN_DIR/dreams/step_N-GUIDANCE-SAMPLER)."""
    dream: Annotated[DreamConfig, tyro.conf.OmitArgPrefixes] = dataclasses.field(
        default_factory=DreamConfig)
    """What to imagine and how to draw it; an option left at None imagines as the run does."""


def _dream(args: list[str]) -> int:
    from agdrl.buffer import ReplayBuffer
    from agdrl.checkpoint import complete_checkpoints
    from agdrl.dream import dream
    from agdrl.trainer import AGDMBRL

    cfg = parse_config(DreamCommand, args, None, "agdrl dream")
    run = cfg.run_dir
    checkpoints = complete_checkpoints(run)
    buffer_path = (checkpoints[-1] if checkpoints else run) / "buffer.npz"
    if not buffer_path.is_file():
        raise RunDirectoryError(f"{run} has no replay buffer to draw start states from (a "
                                "checkpoint's buffer.npz): pass a run directory or checkpoint")
    model = AGDMBRL.load(saved_agent(run))
    result = dream(model, ReplayBuffer.load(buffer_path), cfg.dream, progress=True)
    icfg = result.imagination
    stem = cfg.out or run / "dreams" / (f"step_{model.num_timesteps:09d}-{icfg.guidance}-"
                                        f"{icfg.sampler}{icfg.sampler_steps or ''}")
    paths = result.write(stem, cfg.dream.formats, {"run_dir": str(run),
                                                     "during_training": False})
    video_s = len(result.frames) / result.fps
    print(f"{result.describe()}\n"
          + "".join(f"  clip {i + 1}: buffer index {c.buffer_index}, {c.real_steps} of "
                    f"{len(c.errors) - 1} steps replayed"
                    f"{' (terminated)' if c.real_terminated else ''}, mean state error "
                    f"{c.summary()['mean_state_error']:.4f}\n"
                    for i, c in enumerate(result.clips))
          + f"drawn in {result.render_seconds:.1f} s for {video_s:.1f} s of video "
          f"({result.render_seconds / video_s:.2f} s per second)\n"
          + "\n".join(f"  {kind}: {path}" for kind, path in paths.items()))
    return 0


def _plugins() -> dict[str, Callable[[list[str]], int]]:
    """Commands that other packages add through the ``agdrl.commands`` entry points (the
    experiments in ``agdrl_lab``: bench, report, baseline, avalanche), loaded when called."""
    found = entry_points(group="agdrl.commands")
    return {ep.name: (lambda args, ep=ep: ep.load()(args)) for ep in found}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    commands = {"train": _train, "eval": _eval, "dream": _dream, **_plugins()}
    if command not in commands:
        raise SystemExit(f"agdrl: unknown command {command!r}; choose "
                         f"{', '.join(sorted(commands))} (agdrl --help)")
    try:
        return commands[command](rest)
    except (ConfigError, ValueError, ImportError, GymError, NumericalFaultError,
            RunDirectoryError) as err:
        raise SystemExit(f"agdrl: {err}") from err


if __name__ == "__main__":
    sys.exit(main())
