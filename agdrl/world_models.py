"""The world models the online loop imagines with, behind one interface.

The loop (:mod:`agdrl.trainer`) needs five things of a world model, whatever it is:

- ``observe``: fold one real transition into its running statistics;
- ``train_step``: one training step on the replay buffer;
- ``imagine``: on-policy segments from real start states, with diagnostics;
- ``save`` / ``load``: its weights in a saved agent (safetensors, no pickle);
- ``optimizers`` / ``write_state`` / ``read_state``: the rest of its state in a checkpoint.

:class:`DiffusionWorld` is the trajectory diffusion model with its guided imagination (AGD-MBRL,
PolyGRAD and the other guidance rows); :class:`EnsembleWorld` is the autoregressive
probabilistic ensemble rolled out under the policy (the classic-MBRL row). A new world model
implements :class:`WorldModel` and joins :data:`WORLD_MODELS`; the loop does not change.
Building is two-step, network then wrapper, so that the composition root can create the agent
between them (the agent's imagination hooks need it, and the order fixes the initial weights).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypedDict

import numpy as np
import torch
from torch import nn

from agdrl.a2c import ActorCriticAgent
from agdrl.buffer import ReplayBuffer
from agdrl.checkpoint import load_weights, save_module
from agdrl.diffusion.samplers import compose
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.ensemble import BootstrapSampler, ProbabilisticEnsemble
from agdrl.envs import IncompatibleEnvError
from agdrl.guidance import PinnedActions, advantage_labels
from agdrl.imagination import EnsembleImagination, Imagination, chain_segments
from agdrl.reward_model import RewardModel
from agdrl.rng import randn
from agdrl.segments import Segment
from agdrl.termination import TerminationModel

if TYPE_CHECKING:
    from agdrl.config import TrainConfig


class WorldModel(Protocol):
    """What the online loop asks of a world model."""

    network: nn.Module
    """The generative model proper (its weights are ``world_model.safetensors``)."""

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float,
                next_obs: np.ndarray) -> None:
        """Fold one real transition (raw units) into the running statistics."""

    def train_step(self, buffer: ReplayBuffer, rng: np.random.Generator,
                   generator: torch.Generator) -> float:
        """One training step on minibatches drawn from ``buffer`` with ``rng``; returns the
        loss. Raises :class:`agdrl.faults.NonFiniteError` before any weight changes."""

    def imagine(self, starts: torch.Tensor, generator: torch.Generator
                ) -> tuple[Segment, dict[str, float]]:
        """starts: (B, ds) raw real states -> an imagined on-policy Segment (B, L), detached,
        and per-batch diagnostics."""

    def rollout(self, starts: torch.Tensor, steps: int, generator: torch.Generator,
                actions: torch.Tensor | None = None, guided: bool = True,
                denoising_steps: int = 0) -> Segment:
        """Trajectories for decision-time planning: starts: (B, ds) raw -> Segment (B,
        steps + 1), rewards and terminal flags as the agent sees them. The first A rows take
        ``actions`` (A, steps, da) raw; the others follow the current policy (with the run's
        advantage guidance when ``guided``). A model that denoises generates each segment in
        ``denoising_steps`` DDIM steps (0: as it imagines); others ignore it."""

    segment_steps: int | None
    """Transitions one generated segment spans (None: any number, step by step)."""

    def metrics(self) -> dict[str, float]:
        """Extra scalars for the training log."""

    @property
    def guidance_seconds(self) -> float:
        """Seconds spent in guidance hooks while imagining (part of the imagination time)."""

    def save(self, folder: Path) -> None:
        """Write the weights into a saved agent's ``folder``."""

    def load(self, folder: Path, device: torch.device | str) -> None:
        """Read what :meth:`save` wrote (shapes checked against this model's)."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by checkpoint name."""

    def write_state(self, folder: Path) -> dict[str, Any]:
        """Write the rest of the state a resumed run needs into a checkpoint ``folder``;
        returns JSON-able entries for its ``training_state.json``."""

    def read_state(self, folder: Path, state: dict[str, Any]) -> None:
        """Restore what :meth:`write_state` wrote."""


class WorldModelState(TypedDict):
    policy_log_delta: float | None  # 'pull' policy guidance's step (None: the ensemble)


def _check_dims(saved: nn.Module, expected: nn.Module) -> None:
    got = (saved.obs_dim, saved.action_dim)
    want = (expected.obs_dim, expected.action_dim)
    if got != want:
        raise IncompatibleEnvError(f"the saved agent has observation/action dims {got}, the "
                                   f"env {want}")


class DiffusionWorld:
    """The trajectory diffusion world model, the per-transition heads the config asks for
    (reward regressor, termination classifier) and the guided imagination over them."""

    STATE: ClassVar[type] = WorldModelState

    SIZE_OPTIONS: ClassVar[str] = "diffusion.denoiser.width or diffusion.denoiser.depth"
    """The options that set how many parameters it has."""

    @staticmethod
    def network(obs_dim: int, action_dim: int, cfg: TrainConfig) -> DiffusionWorldModel:
        """The diffusion model of a training config."""
        return DiffusionWorldModel(obs_dim, action_dim, cfg.diffusion, cfg.device)

    @staticmethod
    def parameter_count(obs_dim: int, action_dim: int, cfg: TrainConfig) -> int:
        """Trained parameters of :meth:`network` (the denoiser, and the student's copy),
        counted on the meta device, where nothing is allocated."""
        with torch.device("meta"):
            denoiser = DiffusionWorldModel.denoiser(obs_dim, action_dim, cfg.diffusion)
        copies = 2 if cfg.diffusion.student_steps else 1
        return copies * sum(p.numel() for p in denoiser.parameters())

    def __init__(self, network: DiffusionWorldModel, agent: ActorCriticAgent, cfg: TrainConfig):
        self.network, self.agent, self.cfg = network, agent, cfg
        icfg, obs_dim, action_dim = cfg.imagination, network.obs_dim, network.action_dim
        self.reward_model = (RewardModel(obs_dim, action_dim, device=cfg.device)
                             if icfg.guidance == "reward" or icfg.experimental.reward == "regressor"
                             else None)
        self.termination_model = (TerminationModel(obs_dim, action_dim, device=cfg.device)
                                  if icfg.experimental.termination == "classifier" else None)
        # models of single real transitions trained beside the world model, by file name
        self.heads: dict[str, RewardModel | TerminationModel] = {
            name: head for name, head in (("reward_model", self.reward_model),
                                          ("termination_model", self.termination_model))
            if head is not None}
        self.imagination = Imagination(network, agent, icfg, self.reward_model,
                                       self.termination_model)

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float,
                next_obs: np.ndarray) -> None:
        for model in (self.network, *self.heads.values()):
            model.update_normalizers(obs[None], np.asarray(action)[None], np.asarray([reward]))

    def train_step(self, buffer: ReplayBuffer, rng: np.random.Generator,
                   generator: torch.Generator) -> float:
        """One diffusion step on replayed segments (labelled with their advantage under the
        current critic when the model is advantage-conditioned), after one step of each
        transition head."""
        h = self.cfg.diffusion
        batch = buffer.sample_segments(h.batch_size, h.horizon, rng, pad=h.pad_segments)
        labels = None
        if h.advantage_conditioning:
            device = self.agent.device
            seg = Segment.from_numpy(batch.states, batch.actions, batch.rewards,
                                     batch.terminals, device)
            labels = advantage_labels(self.agent.critic, seg,
                                      torch.as_tensor(batch.mask, device=device),
                                      self.agent.cfg.gamma)
        for head in self.heads.values():
            head.train_step(buffer.sample_transitions(h.batch_size, rng))
        return self.network.train_step(batch, generator, labels)

    def imagine(self, starts: torch.Tensor, generator: torch.Generator
                ) -> tuple[Segment, dict[str, float]]:
        return self.imagination(starts, generator)

    @property
    def segment_steps(self) -> int:
        return self.network.cfg.horizon - 1

    def rollout(self, starts: torch.Tensor, steps: int, generator: torch.Generator,
                actions: torch.Tensor | None = None, guided: bool = True,
                denoising_steps: int = 0) -> Segment:
        """As :meth:`WorldModel.rollout`: ⌈steps / (H − 1)⌉ segments chained end to start.
        Action rows are pinned by a hook after the others' guidance (their initial noise
        too, so the denoiser never sees other actions for them); advantage resampling is not
        applied (the planner selects). With ``denoising_steps`` the teacher samples each
        segment by DDIM on a trailing grid of that many steps, then the imagination's settle
        steps."""
        img, net = self.imagination, self.network
        sampler, student = img.sampler, img.use_student
        if denoising_steps:
            sampler = dataclasses.replace(
                net.default_sampler("ddim", denoising_steps, spacing="trailing"),
                settle_steps=img.sampler.settle_steps)
            student = False
        span, pinned = self.segment_steps, 0 if actions is None else actions.shape[0]
        follow = starts.shape[0] > pinned
        state = img.state if guided else None
        first = img.cfg.experimental.guide_states_first
        hooks = ((state, img.policy) if first else (img.policy, state)) if follow else (state,)
        pieces = []
        for k in range(math.ceil(steps / span)):
            init = pin = None
            if pinned:
                part = actions[:, k * span: k * span + net.cfg.horizon].to(net.device)
                part = torch.cat([part, part[:, -1:].expand(-1, net.cfg.horizon
                                                            - part.shape[1], -1)], 1)
                noise = randn((starts.shape[0] - pinned, net.cfg.horizon, net.action_dim),
                              generator, net.device)
                init = torch.cat([part, net.action_norm.unnormalize(noise)])
                pin = PinnedActions(net.action_norm.normalize(part))
            seg = net.sample(starts, sampler, actions=init, hook=compose(*hooks, pin),
                             generator=generator, wrap_denoiser=img.wrap, student=student)
            pieces.append(seg)
            starts = seg.states[:, -1].detach()
        seg = chain_segments(pieces)
        return img.relabel(Segment(*(x[:, : steps + 1].detach() for x in (
            seg.states, seg.actions, seg.rewards, seg.terminals))))

    def metrics(self) -> dict[str, float]:
        if self.network.student is None:
            return {}
        return {"student_loss": self.network.last_student_loss}

    @property
    def guidance_seconds(self) -> float:
        return self.imagination.guidance_seconds

    @guidance_seconds.setter
    def guidance_seconds(self, seconds: float) -> None:
        self.imagination.guidance_seconds = seconds

    def save(self, folder: Path) -> None:
        self.network.save(folder / "world_model.safetensors")
        for name, head in self.heads.items():
            save_module(head, folder / f"{name}.safetensors", {"kind": name})

    def load(self, folder: Path, device: torch.device | str) -> None:
        saved = DiffusionWorldModel.load(folder / "world_model.safetensors", device)
        _check_dims(saved, self.network)
        self.network.load_state_dict(saved.state_dict())
        self.network.train_steps = saved.train_steps
        for name, head in self.heads.items():
            load_weights(head, folder / f"{name}.safetensors", device)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"world_model": self.network.optimizer}
        opts.update({name: head.optimizer for name, head in self.heads.items()})
        if self.network.student is not None:
            opts["student"] = self.network.student_optimizer
        return opts

    def write_state(self, folder: Path) -> dict[str, Any]:
        return {"policy_log_delta": self.imagination.policy.log_delta}

    def read_state(self, folder: Path, state: dict[str, Any]) -> None:
        self.imagination.policy.log_delta = state["policy_log_delta"]


class EnsembleWorld:
    """The autoregressive probabilistic ensemble (bootstrapped members, elites re-selected
    every ``cfg.elite_every`` steps) rolled out under the policy for ``cfg.ensemble_horizon``
    steps."""

    STATE: ClassVar[type] = WorldModelState
    ELITE_TRANSITIONS: ClassVar[int] = 2000
    """Replayed transitions the elites are selected on."""

    SIZE_OPTIONS: ClassVar[str] = "ensemble.width, ensemble.depth or ensemble.members"
    """The options that set how many parameters it has."""

    @staticmethod
    def network(obs_dim: int, action_dim: int, cfg: TrainConfig) -> ProbabilisticEnsemble:
        """The ensemble of a training config."""
        return ProbabilisticEnsemble(obs_dim, action_dim, cfg.ensemble, cfg.device)

    @staticmethod
    def parameter_count(obs_dim: int, action_dim: int, cfg: TrainConfig) -> int:
        """Parameters of :meth:`network`, counted on the meta device."""
        with torch.device("meta"):
            network = ProbabilisticEnsemble(obs_dim, action_dim, cfg.ensemble, "meta")
        return sum(p.numel() for p in network.parameters())

    def __init__(self, network: ProbabilisticEnsemble, agent: ActorCriticAgent, cfg: TrainConfig):
        self.network, self.cfg = network, cfg
        self.bootstrap = BootstrapSampler(cfg.ensemble.members)
        self.imagination = EnsembleImagination(network, agent, cfg.ensemble_horizon)
        self.guidance_seconds = 0.0  # nothing to guide

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float,
                next_obs: np.ndarray) -> None:
        self.network.update_normalizers(obs[None], np.asarray(action)[None],
                                        np.asarray([reward]), next_obs[None])

    def train_step(self, buffer: ReplayBuffer, rng: np.random.Generator,
                   generator: torch.Generator) -> float:
        loss = self.network.train_step(
            self.bootstrap.sample(buffer, self.cfg.ensemble.batch_size, rng))
        if self.network.train_steps % self.cfg.elite_every == 0:
            self.network.select_elites(buffer.sample_transitions(self.ELITE_TRANSITIONS, rng))
        return loss

    def imagine(self, starts: torch.Tensor, generator: torch.Generator
                ) -> tuple[Segment, dict[str, float]]:
        return self.imagination(starts, generator)

    segment_steps = None

    def rollout(self, starts: torch.Tensor, steps: int, generator: torch.Generator,
                actions: torch.Tensor | None = None, guided: bool = True,
                denoising_steps: int = 0) -> Segment:
        """As :meth:`WorldModel.rollout` (no guidance and no denoising: ``guided`` and
        ``denoising_steps`` are moot)."""
        actor, pinned = self.imagination.agent.actor, 0 if actions is None else actions.shape[0]
        t = 0

        def act(s: torch.Tensor) -> torch.Tensor:
            nonlocal t
            step, t = min(t, steps - 1), t + 1
            if not pinned:
                return actor.sample(s, generator)
            own = actions[:, step].to(s.device)
            if pinned == s.shape[0]:
                return own
            return torch.cat([own, actor.sample(s[pinned:], generator)])

        return self.network.rollout(starts, act, generator=generator, horizon=steps + 1)

    def metrics(self) -> dict[str, float]:
        return {}

    def save(self, folder: Path) -> None:
        self.network.save(folder / "world_model.safetensors")

    def load(self, folder: Path, device: torch.device | str) -> None:
        saved = ProbabilisticEnsemble.load(folder / "world_model.safetensors", device)
        _check_dims(saved, self.network)
        self.network.load_state_dict(saved.state_dict())
        self.network.train_steps = saved.train_steps

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"world_model": self.network.optimizer}

    def write_state(self, folder: Path) -> dict[str, Any]:
        np.savez(folder / "bootstrap.npz", **self.bootstrap.state())
        return {"policy_log_delta": None}

    def read_state(self, folder: Path, state: dict[str, Any]) -> None:
        with np.load(folder / "bootstrap.npz", allow_pickle=False) as saved:
            self.bootstrap.load_state(dict(saved))


WORLD_MODELS: dict[str, type[DiffusionWorld] | type[EnsembleWorld]] = {
    "diffusion": DiffusionWorld, "ensemble": EnsembleWorld}
"""World models by the name ``TrainConfig.world_model`` takes."""
