"""Checkpoints of a training run, written from its components.

A checkpoint folder holds the agent's saved model (``config.json`` and weights: what
``AGDMBRL.save`` writes) and ``training_state.json`` with its companion files: what each
:class:`Stateful` component of the run (random streams, clock, world model, the trainer's
own progress) writes of itself. The folder is written atomically with a SHA-256 manifest
(:func:`agdrl.checkpoint.atomic_directory`); everything is safetensors, numpy without pickle
or JSON.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from agdrl.checkpoint import atomic_directory, latest_checkpoint
from agdrl.faults import RunDirectoryError

CHECKPOINT_FORMAT = 1
"""Version of the checkpoint layout (training_state.json and its companion files)."""


class Stateful(Protocol):
    """A component of a training run that continuing it needs."""

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


def read_training_state(folder: Path, components: Iterable[Stateful]) -> None:
    try:
        state = json.loads((folder / "training_state.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{folder} is not a complete agdrl checkpoint: {err}") from err
    if state.get("format_version") != CHECKPOINT_FORMAT:
        raise ValueError(f"{folder}: unsupported checkpoint format "
                         f"{state.get('format_version')}")
    for component in components:
        component.read_state(folder, state)


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
    for old in sorted(folder.glob("step_*"))[:-keep]:
        shutil.rmtree(old)
