"""The online AGD-MBRL loop (DESIGN §2.5) and its Stable-Baselines3-style API.

Per real environment step: act (random during the prefill, then the policy), store the
transition, update the running statistics, take ``model_updates_per_step`` diffusion steps, and
every ``agent_update_every`` steps imagine a batch of guided segments from real start states
and update the actor-critic on them. Evaluation runs on a separate environment instance with
the deterministic action.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agdrl import distributed
from agdrl.a2c import ActorCriticAgent
from agdrl.buffer import ReplayBuffer
from agdrl.callbacks import (
    Checkpoint,
    Dreams,
    Evaluation,
    ProgressBar,
    TrainLog,
    as_callback,
)
from agdrl.checkpoint import (
    atomic_directory,
    complete_checkpoints,
    latest_checkpoint,
    load_optimizers,
    load_tensors,
    load_weights,
    read_meta,
    save_module,
    save_optimizers,
    save_tensors,
    verify_manifest,
)
from agdrl.collect import new_buffer
from agdrl.config import ConfigError, TrainConfig, config_from_dict, resolve_for_task
from agdrl.envs import env_id, get_env_state, get_sim_state, make_env, set_env_state
from agdrl.evaluation import evaluate_policy, require_video
from agdrl.faults import NonFiniteError, NumericalFaultError, RunDirectoryError
from agdrl.presets import PRESETS
from agdrl.run_log import RunLog
from agdrl.world_models import WORLD_MODELS, WorldModel

CHECKPOINT_FORMAT = 1
"""Version of the checkpoint layout (training_state.json and its companion files)."""

PHASES = ("environment", "model", "imagination", "agent", "evaluation")
"""Phases of :meth:`AGDMBRL.learn` whose wall-clock time is accounted."""


class AGDMBRL:
    """Advantage-guided diffusion MBRL with a Stable-Baselines3-style interface. By config the
    same agent is also every other imagination-based row: PolyGRAD (guidance 'none'), reward
    and classifier-free guidance, and the classic-MBRL ensemble (world_model='ensemble').

    >>> agent = AGDMBRL("InvertedPendulum-v5", PRESETS["fast"], run_dir="runs/ip")
    >>> agent.learn(20_000, progress_bar=True)
    >>> action, _ = agent.predict(obs, deterministic=True)
    >>> agent.save("runs/ip/model"); agent = AGDMBRL.load("runs/ip/model")
    """

    def __init__(self, env: str | gym.Env, config: TrainConfig | None = None,
                 run_dir: str | Path | None = None, eval_env: gym.Env | None = None):
        cfg = config or PRESETS["fast"]
        if cfg.video or cfg.dream_every:
            require_video()
            os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering
        self.env = make_env(env, seed=cfg.seed)
        if eval_env is None:
            spec = getattr(self.env, "spec", None)
            if spec is None:
                raise ValueError("pass eval_env= for an environment that was not made by "
                                 "gymnasium.make (evaluation needs its own instance)")
            eval_env = gym.make(spec, render_mode="rgb_array" if cfg.video else None)
        elif cfg.video and eval_env.render_mode != "rgb_array":
            raise ValueError("video needs an eval_env made with render_mode='rgb_array'")
        self.eval_env = make_env(eval_env, seed=cfg.seed + 10_000)
        cfg = resolve_for_task(cfg, env_id(self.env))
        self.cfg = cfg
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self._seed_streams(step=0)
        space = self.env.action_space
        obs_dim, action_dim = self.env.observation_space.shape[0], space.shape[0]
        kind = WORLD_MODELS[cfg.world_model]
        network = kind.network(obs_dim, action_dim, cfg)  # initial weights: network, agent,
        self.agent = ActorCriticAgent(obs_dim, space.low, space.high, cfg.agent, cfg.device,
                                      learn_q=cfg.imagination.advantage == "qv")
        self.world_model: WorldModel = kind(network, self.agent, cfg)  # then its heads
        self.buffer = new_buffer(self.env)
        # under torchrun only rank 0 writes (logs, checkpoints, videos) and evaluates
        self.run_dir = Path(run_dir) if run_dir is not None and distributed.is_main() else None
        self.log = RunLog(self.run_dir, cfg) if self.run_dir is not None else None
        self.num_timesteps = 0
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._elapsed_before = 0.0  # seconds in learn() before the call in progress
        self._clock_start: float | None = None  # perf_counter() minus that, during learn()
        self.nonfinite_skipped = 0
        self.model_loss = float("nan")  # the last world-model loss
        self.agent_metrics: dict[str, float] | None = None  # this step's agent update's
        self._obs, _ = self.env.reset(seed=cfg.seed)
        self.env.action_space.seed(cfg.seed)

    @property
    def elapsed_s(self) -> float:
        """Wall-clock seconds spent in :meth:`learn` so far, over every call and resume (a
        checkpoint keeps it): the ``wall_s`` of ``evaluations.csv``."""
        if self._clock_start is None:
            return self._elapsed_before
        return time.perf_counter() - self._clock_start

    def _seed_streams(self, step: int) -> None:
        """The random streams. One process: one numpy and one torch stream from the seed
        (acting shares the torch one; a chain captured in a CUDA graph draws from the device's
        default generator, which torch.manual_seed(seed) has seeded). Under torchrun every rank
        draws its own minibatches and imagination noise, while the acting noise is common to
        all ranks, whose copies of the environment must stay identical; ``step`` keys the
        streams of a resumed run."""
        seed = self.cfg.seed
        if distributed.world_size() == 1:
            self.rng = np.random.default_rng(seed)
            self.generator = self.act_generator = torch.Generator().manual_seed(seed)
        else:
            own = np.random.SeedSequence([seed, distributed.rank(), step])
            self.rng = np.random.default_rng(own)
            self.generator = torch.Generator().manual_seed(int(own.generate_state(1)[0]))
            common = np.random.SeedSequence([seed, step])
            self.act_generator = torch.Generator().manual_seed(int(common.generate_state(1)[0]))
            if self.cfg.imagination.cuda_graph:  # a captured chain draws its noise there
                torch.cuda.manual_seed(int(own.generate_state(2)[1]))

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the wall-clock time of the block to ``phase`` of :meth:`time_profile`."""
        start = time.perf_counter()
        yield
        self.seconds[phase] += time.perf_counter() - start

    def time_profile(self) -> dict[str, float]:
        """Wall-clock seconds spent so far in each phase of :meth:`learn`: environment (acting
        and storing), model (diffusion and reward-model training), sampling and guidance (the
        two parts of imagination; on CUDA guidance is the device's time between events around
        the hooks), agent (actor-critic update), evaluation."""
        out = dict(self.seconds)
        out["guidance"] = self.world_model.guidance_seconds
        out["sampling"] = out.pop("imagination") - out["guidance"]
        return out

    # ------------------------------------------------------------------ acting
    def predict(self, obs: np.ndarray, deterministic: bool = True
                ) -> tuple[np.ndarray, None]:
        """The policy's action for one observation (ds,) or a batch (B, ds)."""
        states = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.agent.device)
        with torch.no_grad():
            action = (self.agent.actor.mode(states) if deterministic
                      else self.agent.actor.sample(states, self.act_generator))
        return action.cpu().numpy(), None

    def evaluate(self, episodes: int | None = None, video_path: Path | None = None
                 ) -> list[float]:
        """Undiscounted returns of ``episodes`` deterministic episodes on the eval env; the
        first episode is written to ``video_path`` (MP4) when given."""
        return evaluate_policy(self.eval_env, lambda obs: self.predict(obs)[0],
                               episodes or self.cfg.eval_episodes, video_path)

    # ------------------------------------------------------------------ learning
    def _step_env(self, random: bool) -> None:
        action = (self.env.action_space.sample() if random
                  else self.predict(self._obs, deterministic=False)[0])
        sim = get_sim_state(self.env)
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        if not (np.isfinite(next_obs).all() and np.isfinite(reward)):
            self._obs, _ = self.env.reset()  # the episode's state is unreliable from here
            self.buffer.cut_episode()  # what it stored so far stays one episode of its own
            raise NonFiniteError("the environment's observation or reward")
        self.buffer.add(self._obs, action, float(reward), next_obs, terminated, truncated, sim)
        self.world_model.observe(self._obs, action, float(reward), next_obs)
        self.agent.update_normalizers(self._obs[None])
        self._obs = next_obs
        if terminated or truncated:
            self._obs, _ = self.env.reset()

    def _model_step(self) -> float:
        return self.world_model.train_step(self.buffer, self.rng, self.generator)

    def _agent_step(self) -> dict[str, float]:
        idx = self.rng.integers(0, self.buffer.size, self.cfg.imagination.batch_size)
        starts = torch.as_tensor(self.buffer.obs[idx])
        with self.timed("imagination"):
            seg, metrics = self.world_model.imagine(starts, self.generator)
        with self.timed("agent"):
            metrics.update(self.agent.update(seg))
        return metrics

    def checkpoint(self) -> None:
        """Write a full checkpoint into the run directory's checkpoints/ (atomically) and drop
        the oldest beyond the limit."""
        folder = self.run_dir / "checkpoints"
        name = f"step_{self.num_timesteps:09d}"
        try:
            with atomic_directory(folder / name) as tmp:
                self._write_model(tmp)
                self._write_training_state(tmp)
        except OSError as err:
            previous = latest_checkpoint(self.run_dir)
            raise RunDirectoryError(
                f"writing checkpoint {name} into {folder} failed ({err}); "
                + (f"{previous.name} is intact" if previous else "no earlier checkpoint")
            ) from err
        for old in sorted(folder.glob("step_*"))[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old)

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every component's optimizers, by checkpoint name."""
        return {**self.world_model.optimizers(), **self.agent.optimizers()}

    def _write_training_state(self, folder: Path) -> None:
        """Everything beyond the weights that continuing the run needs: optimizer states, the
        replay buffer, every random stream, the env's episode in progress, counters."""
        save_optimizers(self._optimizers(), folder / "optimizers.safetensors")
        self.buffer.save(folder / "buffer.npz")
        world_model_state = self.world_model.write_state(folder)
        streams = {"generator": self.generator.get_state(), "torch_global": torch.get_rng_state()}
        if self.cfg.imagination.cuda_graph:  # the captured chain's noise
            streams["torch_cuda"] = torch.cuda.get_rng_state(self.cfg.device)
        save_tensors(streams, folder / "rng.safetensors", {"kind": "rng"})
        (folder / "training_state.json").write_text(json.dumps({
            "format_version": CHECKPOINT_FORMAT, "num_timesteps": self.num_timesteps,
            "obs": np.asarray(self._obs).tolist(), "numpy_rng": self.rng.bit_generator.state,
            "env": get_env_state(self.env), "eval_env": get_env_state(self.eval_env),
            **world_model_state,
            "seconds": self.seconds, "guidance_seconds": self.world_model.guidance_seconds,
            "elapsed_s": self.elapsed_s, "nonfinite_skipped": self.nonfinite_skipped}))

    def _read_training_state(self, folder: Path) -> None:
        try:
            state = json.loads((folder / "training_state.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{folder} is not a complete agdrl checkpoint: {err}") from err
        if state.get("format_version") != CHECKPOINT_FORMAT:
            raise ValueError(f"{folder}: unsupported checkpoint format "
                             f"{state.get('format_version')}")
        load_optimizers(self._optimizers(), folder / "optimizers.safetensors", self.cfg.device)
        self.buffer = ReplayBuffer.load(folder / "buffer.npz")
        rng = load_tensors(folder / "rng.safetensors", "rng")
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch_global"])
        if "torch_cuda" in rng:
            torch.cuda.set_rng_state(rng["torch_cuda"], self.cfg.device)
        self.rng.bit_generator.state = state["numpy_rng"]
        set_env_state(self.env, state["env"])
        set_env_state(self.eval_env, state["eval_env"])
        self._obs = np.asarray(state["obs"], dtype=self.env.observation_space.dtype)
        self.world_model.read_state(folder, state)
        self.seconds = state["seconds"]
        self.world_model.guidance_seconds = state["guidance_seconds"]
        # checkpoints written before elapsed_s was saved: the accounted phases are nearly all
        self._elapsed_before = state.get("elapsed_s", sum(self.seconds.values()))
        self.nonfinite_skipped = state.get("nonfinite_skipped", 0)
        self.num_timesteps = state["num_timesteps"]

    @classmethod
    def resume(cls, run_dir: str | Path, env: str | gym.Env | None = None,
               eval_env: gym.Env | None = None) -> AGDMBRL:
        """Continue a run from its latest complete checkpoint: weights, optimizers, replay
        buffer, random streams, the episode in progress and the logs (rows logged after the
        checkpoint are dropped). Then call ``learn(remaining steps)``."""
        run_dir = Path(run_dir)
        candidates = complete_checkpoints(run_dir)[::-1]
        if not candidates:
            raise ValueError(f"{run_dir} has no complete checkpoint to resume from")
        for i, checkpoint in enumerate(candidates):
            try:  # the newest checkpoint that verifies; a damaged one is reported and skipped
                verify_manifest(checkpoint)
                model = cls.load(checkpoint, env=env, eval_env=eval_env)
                model._read_training_state(checkpoint)
                break
            except ValueError as err:
                if i == len(candidates) - 1:
                    raise
                warnings.warn(f"skipping checkpoint {checkpoint.name}: {err}", stacklevel=2)
        if distributed.world_size() > 1:  # rank 0's streams were saved: give each rank its own
            model._seed_streams(model.num_timesteps)
        if distributed.is_main():
            model.run_dir = run_dir
            model.log = RunLog(run_dir, model.cfg, resume_step=model.num_timesteps)
        return model

    def _guarded(self, fn: Callable, *args, default=None):
        """``fn(*args)``, with a :class:`NonFiniteError` handled as ``on_nonfinite`` says:
        'skip' counts it and returns ``default``; 'stop' checkpoints the last good state
        (the bad values never reached the weights or the buffer) and raises
        :class:`NumericalFaultError`."""
        try:
            return fn(*args)
        except NonFiniteError as err:
            if self.cfg.on_nonfinite == "skip":
                self.nonfinite_skipped += 1
                return default
            saved = ""
            if self.run_dir is not None:
                self.checkpoint()
                saved = f"; the last good state is saved in {latest_checkpoint(self.run_dir)}"
            raise NumericalFaultError(
                f"{err} at env step {self.num_timesteps}{saved} (on_nonfinite='skip' skips "
                "such transitions and batches instead)") from err

    def train_world_model(self, steps: int) -> float:
        """``steps`` more world-model steps on the replay buffer as it stands, with no
        environment steps (as right after the prefill): to fit the model to data it was given,
        or to see whether it is undertrained. Returns the last loss."""
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        if self.buffer.size == 0:
            raise ValueError("the replay buffer is empty: collect with learn() or load one")
        loss = float("nan")
        with self.timed("model"):
            for _ in range(steps):
                loss = self._guarded(self._model_step, default=loss)
        return loss

    def learn(self, total_timesteps: int, progress_bar: bool = False,
              callback: Any = None) -> AGDMBRL:
        """Train for ``total_timesteps`` more real steps. ``callback``: a function of the agent
        called after every step, or an object with Stable-Baselines3's callback interface
        (:class:`agdrl.callbacks.Callback`), or a list of them; returning False stops
        training."""
        if total_timesteps <= 0:
            raise ValueError(f"total_timesteps must be positive, got {total_timesteps}")
        if self.run_dir is None and (self.cfg.video or self.cfg.wandb or self.cfg.dream_every):
            raise ConfigError("video, dreams and wandb write into the run directory: pass "
                              "run_dir=")
        end = self.num_timesteps + total_timesteps
        evaluation = Evaluation(end)
        callbacks = [TrainLog(), evaluation, Dreams(), Checkpoint(end)]
        if progress_bar:
            callbacks.append(ProgressBar(total_timesteps, evaluation))
        users = callback if isinstance(callback, list | tuple) else [callback]
        callbacks += [as_callback(c) for c in users if c is not None]
        for c in callbacks:
            c.init_callback(self)
        # wall_s continues from earlier calls and from a resume, and stops between calls
        self._clock_start = time.perf_counter() - self._elapsed_before
        try:
            for c in callbacks:
                c.on_training_start(locals(), globals())
            self._learn_steps(end, callbacks)
            for c in callbacks:
                c.on_training_end()
        finally:
            self._elapsed_before, self._clock_start = self.elapsed_s, None
        return self

    def _learn_steps(self, end: int, callbacks: list[Any]) -> None:
        """The algorithm, until step ``end``: act (randomly during the prefill) and store the
        transition; train the world model (``pretrain_steps`` at the end of the prefill, then
        ``model_updates_per_step`` per step); every ``agent_update_every`` steps imagine a
        batch from real start states and update the actor-critic on it. The callbacks do the
        periodic work (logs, evaluation, checkpoints) after every step."""
        cfg = self.cfg
        while self.num_timesteps < end:
            prefill = self.num_timesteps < cfg.prefill_steps
            with self.timed("environment"):
                self._guarded(self._step_env, prefill)
            self.num_timesteps += 1
            step = self.num_timesteps
            updates = cfg.pretrain_steps if step == cfg.prefill_steps else 0
            updates += 0 if prefill else cfg.model_updates_per_step
            with self.timed("model"):
                for _ in range(updates):
                    self.model_loss = self._guarded(self._model_step, default=self.model_loss)
            self.agent_metrics = None
            if not prefill and step % cfg.agent_update_every == 0:
                self.agent_metrics = self._guarded(self._agent_step)
            if not all([c.on_step() for c in callbacks]):
                break

    def close(self) -> None:
        """Close the run's logs (TensorBoard, Weights & Biases)."""
        if self.log is not None:
            self.log.close()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """A directory with ``config.json`` and the weights (safetensors, no pickle), written
        atomically. Enough to act and evaluate; a run directory's checkpoints also hold what
        :meth:`resume` needs."""
        with atomic_directory(path) as tmp:
            self._write_model(tmp)

    def _write_model(self, path: Path) -> None:
        (path / "config.json").write_text(json.dumps(
            {"config": dataclasses.asdict(self.cfg), "num_timesteps": self.num_timesteps},
            indent=1, default=str))
        self.world_model.save(path)
        save_module(self.agent, path / "agent.safetensors",
                    {"kind": "actor_critic", "updates": self.agent.updates})

    @classmethod
    def load(cls, path: str | Path, env: str | gym.Env | None = None,
             run_dir: str | Path | None = None, eval_env: gym.Env | None = None) -> AGDMBRL:
        """Rebuild a saved agent (on ``env``, or a fresh instance of the saved task). Files
        whose checksum differs from the one written with them are refused."""
        path = Path(path)
        verify_manifest(path)
        try:
            saved = json.loads((path / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a saved agdrl agent: {err}") from err
        cfg = config_from_dict(TrainConfig, saved["config"])
        model = cls(env if env is not None else cfg.env, cfg, run_dir, eval_env)
        model.world_model.load(path, cfg.device)
        load_weights(model.agent, path / "agent.safetensors", cfg.device)
        model.agent.updates = read_meta(path / "agent.safetensors", "actor_critic")["updates"]
        model.num_timesteps = saved["num_timesteps"]
        return model
