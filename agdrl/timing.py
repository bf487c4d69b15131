"""Wall-clock accounting of a training run: seconds per phase, and the run's elapsed time,
which continues across ``learn`` calls and resumes and stops between them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, NotRequired, TypedDict


class ClockState(TypedDict):
    seconds: dict[str, float]
    elapsed_s: NotRequired[float]  # absent from checkpoints of older versions

PHASES = ("environment", "model", "imagination", "agent", "evaluation")
"""Phases of a training run whose wall-clock time is accounted."""


class PhaseClock:
    """``seconds[phase]`` accumulates the time of :meth:`timed` blocks; :attr:`elapsed` runs
    between :meth:`start` and :meth:`stop` on top of what earlier runs spent."""

    STATE: ClassVar[type] = ClockState

    def __init__(self, phases: tuple[str, ...]):
        self.seconds: dict[str, float] = dict.fromkeys(phases, 0.0)
        self._before = 0.0  # seconds before the running period
        self._start: float | None = None  # perf_counter() minus _before, while running

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the wall-clock time of the block to ``seconds[phase]``."""
        start = time.perf_counter()
        yield
        self.seconds[phase] += time.perf_counter() - start

    @property
    def elapsed(self) -> float:
        """Seconds while running, over every period (a checkpoint keeps them)."""
        return self._before if self._start is None else time.perf_counter() - self._start

    def start(self) -> None:
        self._start = time.perf_counter() - self._before

    def stop(self) -> None:
        self._before, self._start = self.elapsed, None

    def profile(self, guidance_seconds: float) -> dict[str, float]:
        """Seconds per phase, the imagination split into sampling and guidance (the time inside
        the guidance hooks; on CUDA the device's time between events around them):
        environment (acting and storing), model (world-model training), sampling, guidance,
        agent (actor-critic update), evaluation."""
        out = dict(self.seconds)
        out["guidance"] = guidance_seconds
        out["sampling"] = out.pop("imagination") - guidance_seconds
        return out

    def write_state(self, folder: Path) -> dict[str, Any]:
        return {"seconds": self.seconds, "elapsed_s": self.elapsed}

    def read_state(self, folder: Path, state: dict[str, Any]) -> None:
        self.seconds = state["seconds"]
        # checkpoints written before elapsed_s was saved: the accounted phases are nearly all
        self._before = state.get("elapsed_s", sum(self.seconds.values()))
