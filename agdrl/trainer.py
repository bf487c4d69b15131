"""AGD-MBRL's Stable-Baselines3-style API: build, learn, predict, evaluate, save, load,
resume. The loop is :mod:`agdrl.loop`; evaluation, logs and checkpoints are callbacks
(:mod:`agdrl.callbacks`); checkpoints are written from the run's components
(:mod:`agdrl.training_state`)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agdrl import distributed
from agdrl.a2c import ActorCriticAgent
from agdrl.checkpoint import (
    atomic_directory,
    load_weights,
    read_meta,
    verify_manifest,
)
from agdrl.collect import new_buffer
from agdrl.config import PlannerConfig, TrainConfig, resolve_for_task
from agdrl.devices import require_device, require_fits
from agdrl.envs import check_custom_env, eval_env_for, is_custom, make_env, recorded_id
from agdrl.evaluation import evaluate_policy, require_video
from agdrl.loop import Progress, learn, train_world_model
from agdrl.planning import Planner
from agdrl.presets import PRESETS
from agdrl.rng import RunStreams
from agdrl.run_directory import RunDirectory
from agdrl.run_log import RunLog
from agdrl.timing import PHASES, PhaseClock
from agdrl.training_state import (
    read_saved_model,
    resume_run,
    write_checkpoint,
    write_saved_model,
    write_training_state,
)
from agdrl.world_models import WORLD_MODELS, WorldModel


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
                 run_dir: str | Path | None = None, eval_env: gym.Env | None = None,
                 overwrite: bool = False):
        """``run_dir``: where the run writes its logs, checkpoints and videos (none when
        None). It is refused while another agent writes it, and when it holds another run
        unless ``overwrite`` (which deletes that run's files once this one is built)."""
        # under torchrun only rank 0 writes (logs, checkpoints, videos) and evaluates
        self.run_dir = Path(run_dir) if run_dir is not None and distributed.is_main() else None
        self.directory = (RunDirectory.claim(self.run_dir, fresh=True, overwrite=overwrite)
                          if self.run_dir is not None else None)
        self.log: RunLog | None = None
        try:
            self._build(env, config or PRESETS["fast"], eval_env)
            if self.directory is not None:
                self.directory.clear_earlier_run()
                self.log = RunLog(self.run_dir, self.cfg)
        except BaseException:
            self.close()
            raise

    def _build(self, env: str | gym.Env, cfg: TrainConfig, eval_env: gym.Env | None) -> None:
        if cfg.video or cfg.dream_every:
            require_video()
            os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering
        device = require_device(cfg.device)
        self.env = make_env(env, seed=cfg.seed)
        if cfg.check_env and is_custom(self.env):
            check_custom_env(env)
        self.eval_env = make_env(eval_env_for(self.env, eval_env, cfg.video),
                                 seed=cfg.seed + 10_000)
        self.cfg = cfg = resolve_for_task(cfg, recorded_id(env, self.env))
        space = self.env.action_space
        obs_dim, action_dim = self.env.observation_space.shape[0], space.shape[0]
        kind = WORLD_MODELS[cfg.world_model]
        learn_q = cfg.imagination.advantage == "qv"
        require_fits({"world model": kind.parameter_count(obs_dim, action_dim, cfg),
                      "agent": ActorCriticAgent.parameter_count(obs_dim, action_dim, cfg.agent,
                                                                learn_q)},
                     device, f"{kind.SIZE_OPTIONS} or agent.hidden")
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.streams = RunStreams(cfg.seed, 0, cfg.device, cfg.imagination.cuda_graph)
        network = kind.network(obs_dim, action_dim, cfg)  # initial weights: network, agent,
        self.agent = ActorCriticAgent(obs_dim, space.low, space.high, cfg.agent, cfg.device,
                                      learn_q=learn_q)
        self.world_model: WorldModel = kind(network, self.agent, cfg)  # then its heads
        self.buffer = new_buffer(self.env)
        self.num_timesteps = 0
        self.clock = PhaseClock(PHASES)
        self.nonfinite_skipped = 0
        self.model_loss = float("nan")  # the last world-model loss
        self.agent_metrics: dict[str, float] | None = None  # this step's agent update's
        self.behaviour = self.planner() if cfg.act_with_planner else None  # else the policy
        self.obs, _ = self.env.reset(seed=cfg.seed)  # what the next step acts on
        self.env.action_space.seed(cfg.seed)

    @property
    def elapsed_s(self) -> float:
        """Wall-clock seconds spent in :meth:`learn` so far, over every call and resume (a
        checkpoint keeps it): the ``wall_s`` of ``evaluations.csv``."""
        return self.clock.elapsed

    def time_profile(self) -> dict[str, float]:
        """Wall-clock seconds spent so far in each phase of :meth:`learn`
        (:meth:`agdrl.timing.PhaseClock.profile`)."""
        return self.clock.profile(self.world_model.guidance_seconds)

    # ------------------------------------------------------------------ acting
    def predict(self, obs: np.ndarray, deterministic: bool = True
                ) -> tuple[np.ndarray, None]:
        """The policy's action for one observation (ds,) or a batch (B, ds)."""
        states = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.agent.device)
        with torch.no_grad():
            action = (self.agent.actor.mode(states) if deterministic
                      else self.agent.actor.sample(states, self.streams.act_generator))
        return action.cpu().numpy(), None

    def planner(self, config: PlannerConfig | None = None) -> Planner:
        """A decision-time planner over this agent's world model and critic (``config``, else
        the run's ``planner``), drawing from the acting stream."""
        return Planner(self.world_model, self.agent, config or self.cfg.planner,
                       self.streams.act_generator)

    def evaluate(self, episodes: int | None = None, video_path: Path | None = None,
                 planner: Planner | None = None) -> list[float]:
        """Undiscounted returns of ``episodes`` episodes on the eval env, acting with the
        policy's deterministic action (or with ``planner``); the first episode is written to
        ``video_path`` (MP4) when given."""
        return evaluate_policy(self.eval_env, planner or (lambda obs: self.predict(obs)[0]),
                               episodes or self.cfg.eval_episodes, video_path,
                               planner.reset if planner else None)

    # ------------------------------------------------------------------ learning
    def learn(self, total_timesteps: int, progress_bar: bool = False,
              callback: Any = None) -> AGDMBRL:
        """Train for ``total_timesteps`` more real steps. ``callback``: a function of the agent
        called after every step, or an object with Stable-Baselines3's callback interface
        (:class:`agdrl.callbacks.Callback`), or a list of them; returning False stops
        training."""
        learn(self, total_timesteps, progress_bar, callback)
        return self

    def train_world_model(self, steps: int) -> float:
        """``steps`` more world-model steps on the replay buffer as it stands, with no
        environment steps (as right after the prefill): to fit the model to data it was given,
        or to see whether it is undertrained. Returns the last loss."""
        return train_world_model(self, steps)

    def close(self) -> None:
        """Close the run's logs (TensorBoard, Weights & Biases) and give the run directory
        up to the next writer."""
        if self.log is not None:
            self.log.close()
            self.log = None
        if self.directory is not None:
            self.directory.release()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """A directory with ``config.json`` and the weights (safetensors, no pickle), written
        atomically. Enough to act and evaluate; a run directory's checkpoints also hold what
        :meth:`resume` needs."""
        with atomic_directory(path) as tmp:
            write_saved_model(tmp, self)

    @classmethod
    def load(cls, path: str | Path, env: str | gym.Env | None = None,
             run_dir: str | Path | None = None, eval_env: gym.Env | None = None,
             overwrite: bool = False, device: str | None = None) -> AGDMBRL:
        """Rebuild a saved agent (on ``env``, whose spaces must have the saved shapes, or a
        fresh instance of the saved task; on ``device``, or the saved one). Files whose
        checksum differs from the one written with them are refused."""
        path = Path(path)
        verify_manifest(path)
        saved = read_saved_model(path)
        cfg = saved.config if device is None else dataclasses.replace(saved.config,
                                                                      device=device)
        model = cls(env if env is not None else cfg.env, cfg, run_dir, eval_env, overwrite)
        try:
            saved.require_shapes(model.env)
            model.world_model.load(path, cfg.device)
            load_weights(model.agent, path / "agent.safetensors", cfg.device)
            model.agent.updates = read_meta(path / "agent.safetensors",
                                            "actor_critic")["updates"]
        except BaseException:
            model.close()
            raise
        model.num_timesteps = saved.num_timesteps
        return model

    def checkpoint(self) -> None:
        """Write a full checkpoint into the run directory's checkpoints/ (atomically) and drop
        the oldest beyond the limit."""
        def write(folder: Path) -> None:
            write_saved_model(folder, self)
            write_training_state(folder, self._components())

        write_checkpoint(self.run_dir, self.num_timesteps, self.cfg.keep_checkpoints, write)

    @classmethod
    def resume(cls, run_dir: str | Path, env: str | gym.Env | None = None,
               eval_env: gym.Env | None = None) -> AGDMBRL:
        """Continue a run from its newest checkpoint that loads (damaged ones are reported,
        skipped and set aside): weights, optimizers, replay buffer, random streams, the episode
        in progress and the logs (rows logged after the checkpoint are dropped). Then call
        ``learn(remaining steps)``. Refused while another agent writes the run directory."""
        return resume_run(cls, Path(run_dir), env, eval_env)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every component's optimizers, by checkpoint name."""
        return {**self.world_model.optimizers(), **self.agent.optimizers()}

    def _components(self) -> list[Any]:
        """What a checkpoint holds beyond the model, in the order it is restored."""
        return [Progress(self), self.streams, self.world_model, self.clock,
                *([self.behaviour] if self.behaviour else [])]
