"""Command-line interface, generated from the dataclass configs with tyro: ``train``, ``eval``
and ``dream`` here, the experiments' commands from the ``agdrl.commands`` entry points."""

from __future__ import annotations

import dataclasses
import signal
import sys
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import tyro
from gymnasium.error import Error as GymError

from agdrl.config import ConfigError, PlannerConfig, require_positive
from agdrl.dream import DreamConfig
from agdrl.faults import NumericalFaultError, RunDirectoryError
from agdrl.presets import PRESETS

T = TypeVar("T")

USAGE = """usage: agdrl COMMAND [options]

commands:
  train       train AGD-MBRL online: agdrl train [fast|paper|demo|tiny] [--run-dir DIR]
              [--env ID] [--guidance sag|eag|none|reward|cfg] [--seed N] ...
              (the preset is named before its options; fast when none is named)
  resume      continue a run from its latest checkpoint: agdrl resume RUN_DIR
              [--total-steps N]
  eval        evaluate a run (its final model, else its latest checkpoint):
              agdrl eval RUN_DIR [--episodes N] [--plan: act with the decision-time planner,
              --planner.candidates N --planner.horizon H --planner.iterations I ...]
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
              table and a self-contained HTML page: agdrl report --runs-dir DIR
              [--budgets N ...] [--also DIR ...] [--tasks ID ...] [--methods NAME ...]
  avalanche   error of the diffusion and autoregressive world models vs open-loop horizon:
              agdrl avalanche [demo|default|reference] [options]

'agdrl COMMAND --help' lists every option with its default.
"""

TYRO_CONVENTIONS = (tyro.conf.CascadeSubcommandArgs, tyro.conf.OmitSubcommandPrefixes)
"""A command's own options (``--run-dir``) may come before or after a preset's name, and the
preset's options keep their own names (``--env``, not ``--config.env``)."""


def parse(cls: type[T], args: list[str], prog: str, default: T | None = None) -> T:
    """``cls`` from the command line by tyro (which prints its own errors and help)."""
    return tyro.cli(cls, args=args, prog=prog, default=default, config=TYRO_CONVENTIONS)


def presets_of(presets: dict[str, Any]) -> Any:
    """The type of a config chosen among named presets: a tyro subcommand per preset (``agdrl
    train paper --env …``), whose options keep their own names."""
    return Annotated[tyro.extras.subcommand_type_from_defaults(presets),
                     tyro.conf.arg(name="")]


TrainPreset = presets_of(PRESETS)


@dataclasses.dataclass(frozen=True)
class TrainCommand:
    """Train AGD-MBRL online: a preset (fast when none is named), changed by options."""

    config: TrainPreset = PRESETS["fast"]
    run_dir: Path | None = None
    """The run directory (default: runs/ENV-seedSEED)."""
    overwrite: bool = False
    """Replace the run already in the run directory (its checkpoints, model and logs are
    deleted) instead of refusing to train there."""


@dataclasses.dataclass(frozen=True)
class ResumeCommand:
    """Continue a run from its latest complete checkpoint (the configuration is the run's)."""

    run_dir: tyro.conf.Positional[Path]
    """The run directory."""
    total_steps: int | None = None
    """Train until this many env steps (default: the run's own total_steps)."""


def _train(args: list[str]) -> int:
    from agdrl import distributed
    from agdrl.trainer import AGDMBRL

    cmd = parse(TrainCommand, args, "agdrl train")
    distributed.init_from_env()  # under torchrun: join the process group
    cfg = cmd.config
    run = cmd.run_dir or Path(f"runs/{cfg.env}-seed{cfg.seed}")
    return _learn(AGDMBRL(cfg.env, cfg, run_dir=run, overwrite=cmd.overwrite), run,
                  cfg.total_steps)


def _resume(args: list[str]) -> int:
    from agdrl import distributed
    from agdrl.trainer import AGDMBRL

    cmd = parse(ResumeCommand, args, "agdrl resume")
    distributed.init_from_env()
    model = AGDMBRL.resume(cmd.run_dir)
    return _learn(model, cmd.run_dir, cmd.total_steps or model.cfg.total_steps)


def _learn(model: Any, run: Path, target: int) -> int:
    """Train ``model`` to ``target`` env steps (one process, or every torchrun rank), save its
    final model into ``run`` and say what it learned."""
    from agdrl import distributed
    from agdrl.checkpoint import latest_checkpoint

    try:
        if model.num_timesteps < target:
            model.learn(target - model.num_timesteps, progress_bar=True)
        if distributed.is_main():
            try:
                model.save(run / "model")
            except OSError as err:
                raise RunDirectoryError(f"writing the final model into {run / 'model'} failed "
                                        f"({err}); the run's checkpoints are intact") from err
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while stopping
        last = latest_checkpoint(run)
        raise Interrupted(
            f"interrupted at env step {model.num_timesteps}; "
            + (f"the last checkpoint {last} is intact: 'agdrl resume {run}' continues from it"
               if last else "no checkpoint was written yet (--checkpoint-every N writes them)")
        ) from None
    finally:
        model.close()
    if distributed.is_main():
        print(_summary(model, run))
    distributed.finish()
    return 0


class Interrupted(Exception):
    """Training stopped by Ctrl-C (its message says what is intact); the exit status is 130."""


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
    """Evaluate a run's agent: its final model, else its newest checkpoint that loads."""

    run_dir: tyro.conf.Positional[Path]
    """The run directory (or a saved model's folder)."""
    episodes: int = 20
    """Deterministic episodes."""
    env: str | None = None
    """Evaluate on this Gymnasium task ('module:EnvId' for one registered by a module) with
    the same observation and action shapes (default: the run's own)."""
    device: str | None = None
    """The torch device to act on (default: the run's)."""
    plan: bool = False
    """Act with the decision-time planner (the options below) instead of the policy's
    deterministic action."""
    planner: PlannerConfig = dataclasses.field(default_factory=PlannerConfig)
    """The planner, when plan."""

    def __post_init__(self):
        require_positive(self, "episodes")


def saved_agents(run: Path) -> list[Path]:
    """The folders a run's agent can be loaded from, best first: its final model, then its
    complete checkpoints newest first; a folder that holds neither is itself a saved model's
    or a checkpoint's folder."""
    from agdrl.checkpoint import complete_checkpoints

    found = [run / "model"] if (run / "model").is_dir() else []
    found += complete_checkpoints(run)[::-1]
    return found or [run]


def load_agent(run: Path, env: str | None = None, device: str | None = None) -> Any:
    """A run's agent from the first of :func:`saved_agents` that loads (a damaged final model
    or checkpoint is reported and skipped)."""
    from agdrl.run_directory import first_loadable
    from agdrl.trainer import AGDMBRL

    if not run.exists():
        raise RunDirectoryError(f"{run} does not exist: pass a run directory or a saved "
                                "model's folder")
    return first_loadable(saved_agents(run),
                          lambda folder: AGDMBRL.load(folder, env=env, device=device),
                          "saved agent")


def _eval(args: list[str]) -> int:
    cfg = parse(EvalConfig, args, "agdrl eval")
    model = load_agent(cfg.run_dir, cfg.env, cfg.device)
    returns = model.evaluate(cfg.episodes, planner=model.planner(cfg.planner) if cfg.plan
                             else None)
    print(f"{model.cfg.env}: mean return {np.mean(returns):.2f} ± {np.std(returns):.2f} over "
          f"{len(returns)} episodes ({model.num_timesteps} training steps"
          f"{', planner' if cfg.plan else ''})")
    return 0


@dataclasses.dataclass(frozen=True)
class DreamCommand:
    """Draw what a run's world model imagines from start states of its replay buffer, next to
    the simulator replaying the same actions from the same states (MP4, GIF, HTML, JSON)."""

    run_dir: tyro.conf.Positional[Path]
    """The run directory: its final model (else its latest checkpoint) and the replay buffer
    of its latest checkpoint; or a checkpoint's folder."""
    out: Path | None = None
    """Where to write, without suffix (default: RUN_DIR/dreams/step_N-GUIDANCE-SAMPLER, or
    step_N-ensemble)."""
    dream: Annotated[DreamConfig, tyro.conf.OmitArgPrefixes] = dataclasses.field(
        default_factory=DreamConfig)
    """What to imagine and how to draw it; an option left at None imagines as the run does."""


def _dream(args: list[str]) -> int:
    from agdrl.buffer import ReplayBuffer
    from agdrl.checkpoint import complete_checkpoints
    from agdrl.dream import dream

    cfg = parse(DreamCommand, args, "agdrl dream")
    run = cfg.run_dir
    checkpoints = complete_checkpoints(run)
    buffer_path = (checkpoints[-1] if checkpoints else run) / "buffer.npz"
    if not buffer_path.is_file():
        raise RunDirectoryError(f"{run} has no replay buffer to draw start states from (a "
                                "checkpoint's buffer.npz): pass a run directory or checkpoint")
    model = load_agent(run)
    result = dream(model, ReplayBuffer.load(buffer_path), cfg.dream, progress=True)
    stem = cfg.out or run / "dreams" / result.name()
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
    commands = {"train": _train, "resume": _resume, "eval": _eval, "dream": _dream,
                **_plugins()}
    if command not in commands:
        raise SystemExit(f"agdrl: unknown command {command!r}; choose "
                         f"{', '.join(sorted(commands))} (agdrl --help)")
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            return commands[command](rest)
        except Interrupted as err:
            print(f"agdrl: {err}", file=sys.stderr)
            raise SystemExit(130) from None
        except KeyboardInterrupt:
            print("agdrl: interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        except (ConfigError, ValueError, ImportError, GymError, NumericalFaultError,
                OSError) as err:
            raise SystemExit(f"agdrl: {err}") from err


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning at the console: one 'agdrl: warning: …' line, without the code location."""
    from agdrl.envs import plain

    print(f"agdrl: warning: {plain(str(message))}", file=sys.stderr if file is None else file)


if __name__ == "__main__":
    sys.exit(main())
