"""Periodic work around the training loop, as callbacks in Stable-Baselines3's shape.

The loop (:meth:`agdrl.trainer.AGDMBRL.learn`) only acts, stores, trains the world model and
the agent; after every environment step it calls ``on_step()`` of each callback, which decides
with a :class:`Every` clock whether its work is due: the training log, evaluation,
checkpoints, the progress bar, and any callback the user passes (an object with this
interface, such as a :class:`Callback` subclass, or a plain function of the agent).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from agdrl import distributed

if TYPE_CHECKING:
    from agdrl.trainer import AGDMBRL


class Every:
    """A step clock (DreamerV3's ``when.Clock`` for a step counter): true at the multiples of
    ``every``; never when ``every`` is 0."""

    def __init__(self, every: int):
        self.every = every

    def __call__(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0


class Callback:
    """Base class (Stable-Baselines3's ``BaseCallback`` interface): ``init_callback(model)``
    once, ``on_training_start()`` and ``on_training_end()`` around each ``learn`` call, and
    ``on_step()`` after every environment step, returning False to stop training. Subclasses
    override ``_on_step`` (and optionally ``_on_training_start`` / ``_on_training_end``);
    ``self.model`` is the agent, ``self.num_timesteps`` its step count."""

    def __init__(self) -> None:
        self.model: AGDMBRL | None = None
        self.n_calls = 0
        self.num_timesteps = 0

    def init_callback(self, model: AGDMBRL) -> None:
        self.model = model

    def on_training_start(self, locals_: dict[str, Any] | None = None,
                          globals_: dict[str, Any] | None = None) -> None:
        self.num_timesteps = self.model.num_timesteps
        self._on_training_start()

    def on_step(self) -> bool:
        self.n_calls += 1
        self.num_timesteps = self.model.num_timesteps
        return self._on_step() is not False

    def on_training_end(self) -> None:
        self._on_training_end()

    def _on_training_start(self) -> None:
        pass

    def _on_step(self) -> bool | None:
        return True

    def _on_training_end(self) -> None:
        pass


class FunctionCallback(Callback):
    """A plain function ``fn(agent)`` called after every step; returning False stops."""

    def __init__(self, fn: Callable[[AGDMBRL], bool | None]):
        super().__init__()
        self.fn = fn

    def _on_step(self) -> bool | None:
        return self.fn(self.model)


def as_callback(callback: Any) -> Any:
    """An object with the callback interface: plain functions are wrapped."""
    if hasattr(callback, "on_step"):
        return callback
    if callable(callback):
        return FunctionCallback(callback)
    raise TypeError(f"a callback must be a function of the agent or have on_step(); got "
                    f"{type(callback).__name__}")


class TrainLog(Callback):
    """Every ``every_updates`` agent updates: the update's metrics, the world model's loss and extra
    scalars, the fraction of time per phase and the env steps per second of this call."""

    def __init__(self, every_updates: int = 50):
        super().__init__()
        self.every_updates = every_updates

    def _on_training_start(self) -> None:
        self.start_step, self.t0 = self.model.num_timesteps, time.perf_counter()
        self.clock = Every(self.every_updates * self.model.cfg.agent_update_every)

    def _on_step(self) -> None:
        model, step = self.model, self.num_timesteps
        if model.log is None or model.agent_metrics is None or not self.clock(step):
            return
        seconds = model.time_profile()
        total = sum(seconds.values())
        model.log.train(step, {**model.agent_metrics, **model.world_model.metrics(),
                               "world_model_loss": model.model_loss,
                               "nonfinite_skipped": model.nonfinite_skipped,
                               **{f"time_fraction_{k}": v / total for k, v in seconds.items()},
                               "env_steps_per_s": (step - self.start_step)
                               / (time.perf_counter() - self.t0)})

    def _on_training_end(self) -> None:
        if self.model.log is not None:
            self.model.log.writer.flush()


class Evaluation(Callback):
    """Every ``cfg.eval_every`` steps and at the end of a ``learn`` call: evaluate the
    deterministic policy (with a video when ``cfg.video``) and log it (rank 0 only)."""

    def __init__(self, end_step: int):
        super().__init__()
        self.end_step = end_step
        self.last_return = float("nan")

    def _on_training_start(self) -> None:
        self.clock = Every(self.model.cfg.eval_every)

    def _on_step(self) -> None:
        model, step = self.model, self.num_timesteps
        if not distributed.is_main() or not (self.clock(step) or step == self.end_step):
            return
        with model.clock.timed("evaluation"):
            video = (model.run_dir / "videos" / f"step_{step:09d}.mp4"
                     if model.cfg.video and model.run_dir is not None else None)
            returns = model.evaluate(video_path=video)
        self.last_return = float(np.mean(returns))
        if model.log is not None:
            model.log.evaluation(step, returns, model.elapsed_s)


class Checkpoint(Callback):
    """Every ``cfg.checkpoint_every`` steps and at the end of a ``learn`` call: check that the
    ranks' models agree and write a checkpoint into the run directory (if there is one)."""

    def __init__(self, end_step: int):
        super().__init__()
        self.end_step = end_step

    def _on_training_start(self) -> None:
        self.clock = Every(self.model.cfg.checkpoint_every)

    def _on_step(self) -> None:
        model, step = self.model, self.num_timesteps
        if not (self.clock(step) or step == self.end_step):
            return
        distributed.check_in_sync(model.world_model.network, "the world model")
        distributed.check_in_sync(model.agent, "the agent")
        if model.run_dir is not None:
            model.checkpoint()


class Dreams(Callback):
    """Every ``cfg.dream_every`` steps once the agent trains: a dream from one start state of
    the replay buffer (the imagined trajectory next to the simulator's replay of its actions,
    :mod:`agdrl.dream`), logged as a video to TensorBoard and W&B and written into the run
    directory's dreams/ (rank 0 only; its time counts as evaluation)."""

    def _on_training_start(self) -> None:
        self.clock = Every(self.model.cfg.dream_every)
        if self.model.cfg.dream_every:
            from agdrl.poses import PoseDecoder

            PoseDecoder(self.model.env)  # refuses a task it cannot draw, before training

    def _on_step(self) -> None:
        from agdrl.dream import DreamConfig, dream

        model, step = self.model, self.num_timesteps
        if (model.log is None or step <= model.cfg.prefill_steps or not self.clock(step)):
            return
        with model.clock.timed("evaluation"):
            result = dream(model, model.buffer, DreamConfig(starts=1, seed=step))
            paths = result.write(model.run_dir / "dreams" / f"step_{step:09d}", ("mp4",),
                                 {"run_dir": str(model.run_dir), "during_training": True})
            model.log.video("dream", step, result.frames, result.fps, paths["mp4"])


class ProgressBar(Callback):
    """A tqdm bar over the steps of a ``learn`` call, with the last evaluation's return and
    the env steps per second (rank 0 only)."""

    def __init__(self, total: int, evaluation: Evaluation):
        super().__init__()
        self.total, self.evaluation, self.bar = total, evaluation, None

    def _on_training_start(self) -> None:
        if distributed.is_main():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="step", mininterval=1.0)
            self.start_step, self.t0 = self.model.num_timesteps, time.perf_counter()

    def _on_step(self) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if self.num_timesteps % 100 == 0:
            speed = (self.num_timesteps - self.start_step) / (time.perf_counter() - self.t0)
            self.bar.set_postfix(last_return=f"{self.evaluation.last_return:.1f}",
                                 env_steps_per_s=f"{speed:.1f}", refresh=False)

    def _on_training_end(self) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def training_callbacks(end: int, steps: int, progress_bar: bool, user: Any) -> list[Any]:
    """The callbacks of a ``learn`` call of ``steps`` steps ending at step ``end``: the
    training log, evaluation, dreams, checkpoints, the progress bar when asked, then the
    user's (one, a list, or None; functions are wrapped)."""
    evaluation = Evaluation(end)
    callbacks = [TrainLog(), evaluation, Dreams(), Checkpoint(end)]
    if progress_bar:
        callbacks.append(ProgressBar(steps, evaluation))
    users = user if isinstance(user, list | tuple) else [user]
    return callbacks + [as_callback(c) for c in users if c is not None]
