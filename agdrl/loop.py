"""The online AGD-MBRL loop (DESIGN §2.5): what :meth:`agdrl.trainer.AGDMBRL.learn` runs.

Per real environment step: act (random during the prefill, then the policy), store the
transition, update the running statistics, take world-model steps, and every
``agent_update_every`` steps imagine a batch from real start states and update the
actor-critic on it. Non-finite values are handled as ``on_nonfinite`` says (:func:`guarded`).
:class:`Progress` is the loop's part of a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NotRequired, TypedDict

import numpy as np
import torch

from agdrl.buffer import ReplayBuffer
from agdrl.callbacks import ProgressBar, training_callbacks
from agdrl.checkpoint import latest_checkpoint, load_optimizers, save_optimizers
from agdrl.config import ConfigError
from agdrl.envs import get_env_state, get_sim_state, set_env_state
from agdrl.faults import NonFiniteError, NumericalFaultError

if TYPE_CHECKING:
    from agdrl.trainer import AGDMBRL


def learn(model: AGDMBRL, total_timesteps: int, progress_bar: bool, callback: Any) -> None:
    """``model.learn``: the callbacks around :func:`learn_steps`, the clock running only
    inside."""
    if total_timesteps <= 0:
        raise ValueError(f"total_timesteps must be positive, got {total_timesteps}")
    cfg = model.cfg
    if model.run_dir is None and (cfg.video or cfg.wandb or cfg.dream_every):
        raise ConfigError("video, dreams and wandb write into the run directory: pass run_dir=")
    end = model.num_timesteps + total_timesteps
    callbacks = training_callbacks(end, total_timesteps, progress_bar, callback)
    for c in callbacks:
        c.init_callback(model)
    model.clock.start()  # wall_s continues from earlier calls and resumes
    try:
        for c in callbacks:
            c.on_training_start(locals(), globals())
        learn_steps(model, end, callbacks)
        for c in callbacks:
            c.on_training_end()
    finally:
        model.clock.stop()
        for c in callbacks:  # a bar left open would be drawn after an error's message
            if isinstance(c, ProgressBar):
                c.close()


def train_world_model(model: AGDMBRL, steps: int) -> float:
    """``model.train_world_model``: ``steps`` world-model steps on the buffer as it stands."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if model.buffer.size == 0:
        raise ValueError("the replay buffer is empty: collect with learn() or load one")
    loss = float("nan")
    with model.clock.timed("model"):
        for _ in range(steps):
            loss = guarded(model, model_step, model, default=loss)
    return loss


def learn_steps(model: AGDMBRL, end: int, callbacks: list[Any]) -> None:
    """The algorithm, until step ``end``: act (randomly during the prefill) and store the
    transition; train the world model (``pretrain_steps`` at the end of the prefill, then
    ``model_updates_per_step`` per step); every ``agent_update_every`` steps imagine a batch
    from real start states and update the actor-critic on it. The callbacks do the periodic
    work (logs, evaluation, checkpoints) after every step."""
    cfg = model.cfg
    while model.num_timesteps < end:
        prefill = model.num_timesteps < cfg.prefill_steps
        with model.clock.timed("environment"):
            guarded(model, step_env, model, prefill)
        model.num_timesteps += 1
        step = model.num_timesteps
        updates = cfg.pretrain_steps if step == cfg.prefill_steps else 0
        updates += 0 if prefill else cfg.model_updates_per_step
        with model.clock.timed("model"):
            for _ in range(updates):
                model.model_loss = guarded(model, model_step, model, default=model.model_loss)
        model.agent_metrics = None
        if not prefill and step % cfg.agent_update_every == 0:
            model.agent_metrics = guarded(model, agent_step, model)
        if not all([c.on_step() for c in callbacks]):
            break


def step_env(model: AGDMBRL, random: bool) -> None:
    """One real step: the action (random, or sampled from the policy), the transition into the
    buffer and every running statistic; a non-finite observation or reward ends the episode
    and stores nothing of that step."""
    action = (model.env.action_space.sample() if random
              else model.behaviour(model.obs) if model.behaviour is not None
              else model.predict(model.obs, deterministic=False)[0])
    sim = get_sim_state(model.env)
    next_obs, reward, terminated, truncated, _ = model.env.step(action)
    if not (np.isfinite(next_obs).all() and np.isfinite(reward)):
        model.obs, _ = model.env.reset()  # the episode's state is unreliable from here
        model.buffer.cut_episode()  # what it stored so far stays one episode of its own
        raise NonFiniteError("the environment's observation or reward")
    model.buffer.add(model.obs, action, float(reward), next_obs, terminated, truncated, sim)
    model.world_model.observe(model.obs, action, float(reward), next_obs)
    model.agent.update_normalizers(model.obs[None])
    model.obs = next_obs
    if terminated or truncated:
        model.obs, _ = model.env.reset()
        if model.behaviour is not None:
            model.behaviour.reset()


def model_step(model: AGDMBRL) -> float:
    """One world-model step on the replay buffer; its loss."""
    return model.world_model.train_step(model.buffer, model.streams.rng, model.streams.generator)


def agent_step(model: AGDMBRL) -> dict[str, float]:
    """Imagine one batch from real start states and update the actor-critic on it."""
    idx = model.streams.rng.integers(0, model.buffer.size, model.cfg.imagination.batch_size)
    with model.clock.timed("imagination"):
        seg, metrics = model.world_model.imagine(torch.as_tensor(model.buffer.obs[idx]),
                                                 model.streams.generator)
    with model.clock.timed("agent"):
        metrics.update(model.agent.update(seg, model.streams.generator))
    return metrics


def guarded(model: AGDMBRL, fn: Callable, *args: Any, default: Any = None) -> Any:
    """``fn(*args)``, with a :class:`NonFiniteError` handled as ``on_nonfinite`` says: 'skip'
    counts it and returns ``default``; 'stop' checkpoints the last good state (the bad values
    never reached the weights or the buffer) and raises :class:`NumericalFaultError`."""
    try:
        return fn(*args)
    except NonFiniteError as err:
        if model.cfg.on_nonfinite == "skip":
            model.nonfinite_skipped += 1
            return default
        saved = ""
        if model.run_dir is not None:
            model.checkpoint()
            saved = f"; the last good state is saved in {latest_checkpoint(model.run_dir)}"
        raise NumericalFaultError(
            f"{err} at env step {model.num_timesteps}{saved} (on_nonfinite='skip' skips "
            "such transitions and batches instead)") from err


class ProgressState(TypedDict):
    num_timesteps: int
    obs: list[float]
    env: dict
    eval_env: dict
    guidance_seconds: float
    nonfinite_skipped: NotRequired[int]  # absent from checkpoints of older versions


class Progress:
    """The loop's part of a checkpoint: optimizers, replay buffer, both envs' episodes in
    progress, counters."""

    STATE: ClassVar[type] = ProgressState

    def __init__(self, model: AGDMBRL):
        self.model = model

    def write_state(self, folder: Path) -> dict[str, Any]:
        m = self.model
        save_optimizers(m.optimizers(), folder / "optimizers.safetensors")
        m.buffer.save(folder / "buffer.npz")
        return {"num_timesteps": m.num_timesteps, "obs": np.asarray(m.obs).tolist(),
                "env": get_env_state(m.env), "eval_env": get_env_state(m.eval_env),
                "guidance_seconds": m.world_model.guidance_seconds,
                "nonfinite_skipped": m.nonfinite_skipped}

    def read_state(self, folder: Path, state: dict[str, Any]) -> None:
        m = self.model
        # the model's config.json and the state were written together: they must agree
        if state["num_timesteps"] != m.num_timesteps:
            raise ValueError(f"{folder}: training_state.json's num_timesteps "
                             f"{state['num_timesteps']} differs from config.json's "
                             f"{m.num_timesteps}")
        if len(state["obs"]) != m.env.observation_space.shape[0]:
            raise ValueError(f"{folder}: training_state.json's obs has {len(state['obs'])} "
                             f"numbers, the env's observations "
                             f"{m.env.observation_space.shape[0]}")
        load_optimizers(m.optimizers(), folder / "optimizers.safetensors", m.cfg.device)
        m.buffer = ReplayBuffer.load(folder / "buffer.npz")
        set_env_state(m.env, state["env"])
        set_env_state(m.eval_env, state["eval_env"])
        m.obs = np.asarray(state["obs"], dtype=m.env.observation_space.dtype)
        m.world_model.guidance_seconds = state["guidance_seconds"]
        m.nonfinite_skipped = state.get("nonfinite_skipped", 0)
        m.num_timesteps = state["num_timesteps"]
