"""Checkpoints of a training run, written from its components.

A checkpoint folder holds the agent's saved model (``config.json`` and weights: what
``AGDMBRL.save`` writes) and ``training_state.json`` with its companion files: what each
:class:`Stateful` component of the run (random streams, clock, world model, the trainer's
own progress) writes of itself. The folder is written atomically with a SHA-256 manifest
(:func:`agdrl.checkpoint.atomic_directory`); everything is safetensors, numpy without pickle
or JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    NotRequired,
    Protocol,
    TypedDict,
    get_origin,
    get_type_hints,
)

import gymnasium as gym

from agdrl import distributed
from agdrl.checkpoint import (
    atomic_directory,
    complete_checkpoints,
    latest_checkpoint,
    read_json,
    save_module,
    verify_manifest,
)
from agdrl.config import ConfigError, TrainConfig, config_from_dict, read_typed
from agdrl.envs import IncompatibleEnvError, env_id
from agdrl.faults import RunDirectoryError
from agdrl.rng import RunStreams
from agdrl.run_directory import RunDirectory, first_loadable
from agdrl.run_log import RunLog

if TYPE_CHECKING:
    from agdrl.trainer import AGDMBRL

CHECKPOINT_FORMAT = 1
"""Version of the checkpoint layout (training_state.json and its companion files)."""


class Stateful(Protocol):
    """A component of a training run that continuing it needs."""

    STATE: ClassVar[type]
    """The JSON entries it writes, as a TypedDict (checked when read: a hand-edited or
    damaged training_state.json is refused naming the field)."""

    def write_state(self, folder: Path) -> dict[str, Any]:
        """Write files into ``folder``; return the JSON-able rest (keys unique in the run)."""
        ...

    def read_state(self, folder: Path, state: dict[str, Any]) -> None:
        """Restore from ``folder`` and the whole ``training_state.json``."""
        ...


def write_training_state(folder: Path, components: Iterable[Stateful]) -> None:
    state: dict[str, Any] = {"format_version": CHECKPOINT_FORMAT}
    for component in components:
        state.update(component.write_state(folder))
    (folder / "training_state.json").write_text(json.dumps(state))


class CheckpointState(TypedDict):
    format_version: int


def read_training_state(folder: Path, components: Iterable[Stateful]) -> None:
    """Restore ``components`` from ``folder``'s training_state.json, whose entries are first
    checked against each component's ``STATE``; ValueError naming the file and the field for
    a missing or mistyped entry."""
    path = folder / "training_state.json"
    state = read_json(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path} must hold a JSON object")
    if state.get("format_version") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: unsupported checkpoint format_version "
                         f"{state.get('format_version')!r} (this agdrl reads "
                         f"{CHECKPOINT_FORMAT})")
    components = list(components)
    for schema in [CheckpointState, *(c.STATE for c in components)]:
        for name, kind in get_type_hints(schema, include_extras=True).items():
            if name not in state:
                # (not __required_keys__: postponed annotations hide NotRequired from it)
                if get_origin(kind) is not NotRequired:
                    raise ValueError(f"{path}: field {name!r} is missing")
                continue
            try:
                state[name] = read_typed(state[name], kind, str(path), name)
            except ConfigError as err:
                raise ValueError(str(err)) from err
    for component in components:
        try:
            component.read_state(folder, state)
        except (KeyError, TypeError, AttributeError, IndexError, OverflowError) as err:
            raise ValueError(f"{path}: the entries of {type(component).__name__} cannot be "
                             f"restored ({type(err).__name__}: {err})") from err


@dataclass(frozen=True)
class SavedModel:
    """What a saved agent's config.json holds (written by ``AGDMBRL.save``)."""

    config: TrainConfig
    """The run's configuration."""
    num_timesteps: int
    """Env steps it was trained for."""
    observation_shape: tuple[int, ...] | None
    """The shape of its env's observations (None: saved before shapes were recorded)."""
    action_shape: tuple[int, ...] | None
    """The shape of its env's actions (None likewise)."""

    def require_shapes(self, env: gym.Env) -> None:
        """IncompatibleEnvError naming both envs unless ``env``'s spaces have the saved
        shapes."""
        if self.observation_shape is None:  # older saves: the weights' own shape check
            return
        want = (self.observation_shape, self.action_shape)
        got = (tuple(env.observation_space.shape), tuple(env.action_space.shape))
        if got != want:
            raise IncompatibleEnvError(
                f"the saved agent was trained on {self.config.env} (observation shape "
                f"{want[0]}, action shape {want[1]}), but {env_id(env)} has observation shape "
                f"{got[0]}, action shape {got[1]}: it can only act on an env with its shapes")


class _SavedModelFile(TypedDict):
    config: dict
    num_timesteps: int
    observation_shape: tuple[int, ...]
    action_shape: tuple[int, ...]


def read_saved_model(folder: Path) -> SavedModel:
    """A saved agent's config.json, checked (ValueError naming the file and the field)."""
    path = folder / "config.json"
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object")
    try:
        for name in ("config", "num_timesteps"):
            if name not in raw:
                raise ConfigError(f"{path}: field {name!r} is missing: not a saved agent")
        fields = {name: read_typed(raw.get(name), kind, str(path), name) for name, kind
                  in get_type_hints(_SavedModelFile).items() if name in raw}
        config = config_from_dict(TrainConfig, raw["config"], str(path), "config.")
    except ConfigError as err:
        raise ValueError(str(err)) from err
    if fields["num_timesteps"] < 0:
        raise ValueError(f"{path}: num_timesteps must be ≥ 0, got {fields['num_timesteps']}")
    return SavedModel(config, fields["num_timesteps"], fields.get("observation_shape"),
                      fields.get("action_shape"))


def write_saved_model(folder: Path, model: AGDMBRL) -> None:
    """What ``AGDMBRL.save`` writes (and every checkpoint holds): ``config.json`` (config, step
    count, the env's observation and action shapes) and the weights."""
    (folder / "config.json").write_text(json.dumps(
        {"config": dataclasses.asdict(model.cfg), "num_timesteps": model.num_timesteps,
         "observation_shape": list(model.env.observation_space.shape),
         "action_shape": list(model.env.action_space.shape)},
        indent=1, default=str))
    model.world_model.save(folder)
    save_module(model.agent, folder / "agent.safetensors",
                {"kind": "actor_critic", "updates": model.agent.updates})


def write_checkpoint(run_dir: Path, step: int, keep: int, write: Callable[[Path], None]
                     ) -> None:
    """``write`` a checkpoint folder ``run_dir/checkpoints/step_{step}`` atomically, then drop
    the oldest beyond ``keep``; a failed write names the intact checkpoint before it."""
    folder = run_dir / "checkpoints"
    name = f"step_{step:09d}"
    try:
        with atomic_directory(folder / name) as tmp:
            write(tmp)
    except OSError as err:
        previous = latest_checkpoint(run_dir)
        raise RunDirectoryError(
            f"writing checkpoint {name} into {folder} failed ({err}); "
            + (f"{previous.name} is intact" if previous else "no earlier checkpoint")
        ) from err
    # only the run's own older checkpoints: one numbered after it was set aside on resume
    older = [p for p in sorted(folder.glob("step_*")) if p.name < name]
    for old in older[: max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(old)


def set_aside_after(run_dir: Path, step: int) -> None:
    """Rename the checkpoints numbered after ``step`` (those a resume from ``step`` skipped as
    damaged, or incomplete) to ``skipped-step_N``: kept for inspection, but never resumed
    from or pruned as the continued run's own."""
    for path in sorted((run_dir / "checkpoints").glob("step_*")):
        if path.name > f"step_{step:09d}":
            target = path.with_name(f"skipped-{path.name}")
            n = 1
            while target.exists():
                n += 1
                target = path.with_name(f"skipped-{path.name}-{n}")
            try:
                os.rename(path, target)
            except OSError as err:
                raise RunDirectoryError(f"cannot set the skipped checkpoint {path} aside: "
                                        f"{err}") from err


def resume_run(cls: type[AGDMBRL], run_dir: Path, env: str | gym.Env | None,
               eval_env: gym.Env | None) -> AGDMBRL:
    """``AGDMBRL.resume``: the newest checkpoint of ``run_dir`` that loads (damaged ones are
    reported, skipped and set aside), its training state restored and the run directory
    claimed for writing, with the logs rows after the checkpoint dropped."""
    candidates = complete_checkpoints(run_dir)[::-1]
    if not candidates:
        raise ValueError(f"{run_dir} has no complete checkpoint to resume from")
    directory = RunDirectory.claim(run_dir, fresh=False) if distributed.is_main() else None

    def load(checkpoint: Path) -> AGDMBRL:
        verify_manifest(checkpoint)
        model = cls.load(checkpoint, env=env, eval_env=eval_env)
        read_training_state(checkpoint, model._components())
        return model

    try:
        model = first_loadable(candidates, load, "checkpoint")
        if directory is not None:
            set_aside_after(run_dir, model.num_timesteps)
            model.run_dir, model.directory = run_dir, directory
            model.log = RunLog(run_dir, model.cfg, resume_step=model.num_timesteps)
    except BaseException:
        if directory is not None:
            directory.release()
        raise
    if distributed.world_size() > 1:  # rank 0's streams were saved: give each rank its own
        cfg = model.cfg
        model.streams = RunStreams(cfg.seed, model.num_timesteps, cfg.device,
                                   cfg.imagination.cuda_graph)
        if model.behaviour is not None:
            model.behaviour.generator = model.streams.act_generator
    return model
