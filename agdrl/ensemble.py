"""Autoregressive world model: a probabilistic MLP ensemble (MBPO / PETS style).

Each member predicts a diagonal Gaussian over [Δs, r] (normalized) and a termination logit from
[s, a] (normalized). Rollouts step forward one transition at a time, each sample drawing from a
random elite member at every step — the "Classic MBRL" row whose errors compound.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agdrl.buffer import ReplayBuffer, TransitionBatch
from agdrl.checkpoint import load_weights, read_meta, save_module
from agdrl.config import EnsembleConfig
from agdrl.distributed import average_gradients
from agdrl.faults import check_finite, check_finite_gradients
from agdrl.normalization import RunningNormalizer
from agdrl.rng import randint, randn
from agdrl.segments import Segment


class EnsembleLinear(nn.Module):
    """E independent linear layers applied in one batched matmul: (E, N, in) -> (E, N, out)."""

    def __init__(self, members: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(members, 1, d_out))
        bound = 1 / math.sqrt(d_in)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class BootstrapSampler:
    """Per-member bootstrap of a growing replay buffer.

    Each transition joins member e's subset with probability 1 - 1/e ≈ 0.632, the expected
    fraction of distinct items in a bootstrap resample; members then draw minibatches
    uniformly from their own subset, so their errors decorrelate as in a bootstrap ensemble.
    Membership of new transitions is drawn as the buffer grows.
    """

    def __init__(self, members: int):
        self.members = members
        self.subsets = [np.zeros(0, np.int64) for _ in range(members)]
        self.seen = 0

    def _grow(self, size: int, rng: np.random.Generator) -> None:
        if size <= self.seen:
            return
        new = np.arange(self.seen, size)
        self.subsets = [np.concatenate([s, new[rng.random(len(new)) < 1 - np.exp(-1)]])
                        for s in self.subsets]
        self.seen = size

    def state(self) -> dict[str, np.ndarray]:
        """The members' subsets and the buffer size they cover (for checkpoints)."""
        return {"seen": np.asarray(self.seen), **{f"member_{i}": s
                                                   for i, s in enumerate(self.subsets)}}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        members = sum(k.startswith("member_") for k in state)
        if members != self.members:
            raise ValueError(f"bootstrap state has {members} members, expected {self.members}")
        self.subsets = [np.asarray(state[f"member_{i}"], np.int64) for i in range(members)]
        self.seen = int(state["seen"])

    def sample(self, buffer: ReplayBuffer, batch_size: int, rng: np.random.Generator
               ) -> TransitionBatch:
        """E·batch_size transitions, member by member (the layout ``train_step`` expects),
        drawn with ``rng`` (which also draws the membership of new transitions)."""
        self._grow(buffer.size, rng)
        idx = np.concatenate([s[rng.integers(0, len(s), batch_size)]
                              for s in self.subsets])
        return buffer.transitions(idx)


class ProbabilisticEnsemble(nn.Module):
    """Ensemble of Gaussian MLPs with soft-bounded log-variances (Chua et al. 2018)."""

    def __init__(self, obs_dim: int, action_dim: int, cfg: EnsembleConfig,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.cfg = cfg
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.out_dim = obs_dim + 1  # Gaussian over [Δs, r]
        e = cfg.members
        dims = [obs_dim + action_dim] + [cfg.width] * cfg.depth
        self.hidden = nn.ModuleList(EnsembleLinear(e, a, b) for a, b in itertools.pairwise(dims))
        self.head = EnsembleLinear(e, cfg.width, 2 * self.out_dim + 1)
        self.max_logvar = nn.Parameter(torch.full((1, 1, self.out_dim), 0.5))
        self.min_logvar = nn.Parameter(torch.full((1, 1, self.out_dim), -10.0))
        self.state_norm = RunningNormalizer(obs_dim)
        self.action_norm = RunningNormalizer(action_dim)
        self.delta_norm = RunningNormalizer(obs_dim)
        self.reward_norm = RunningNormalizer(1)
        self.register_buffer("elite_index", torch.arange(cfg.elites))
        self.to(device)
        self.device = torch.device(device)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=cfg.lr)
        self.train_steps = 0

    def update_normalizers(self, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                           next_states: np.ndarray) -> None:
        self.state_norm.update(states)
        self.action_norm.update(actions)
        self.delta_norm.update(np.asarray(next_states) - np.asarray(states))
        self.reward_norm.update(np.asarray(rewards)[..., None])

    def forward(self, states: torch.Tensor, actions: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """states: (E, N, ds), actions: (E, N, da) raw -> mean, logvar (E, N, ds+1) normalized
        [Δs, r], and termination logits (E, N)."""
        h = torch.cat([self.state_norm.normalize(states), self.action_norm.normalize(actions)], -1)
        for layer in self.hidden:
            h = F.silu(layer(h))
        out = self.head(h)
        mean, raw_logvar = out[..., : self.out_dim], out[..., self.out_dim : 2 * self.out_dim]
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw_logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar, out[..., -1]

    def targets(self, batch: TransitionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=torch.float32, device=self.device)

        delta = self.delta_norm.normalize(t(batch.next_states) - t(batch.states))
        reward = self.reward_norm.normalize(t(batch.rewards)[..., None])
        return torch.cat([delta, reward], -1), t(batch.terminals)

    def _reshape(self, batch: TransitionBatch) -> TransitionBatch:
        e = self.cfg.members
        if len(batch.states) % e:
            raise ValueError(f"batch of {len(batch.states)} does not split over {e} members")
        return TransitionBatch(*(np.asarray(a).reshape(e, -1, *np.shape(a)[1:])
                                 for a in dataclasses.astuple(batch)))

    def train_step(self, batch: TransitionBatch) -> float:
        """One step of Gaussian NLL + termination BCE on E·B transitions, the e-th block of B
        for member e (draw them with :class:`BootstrapSampler` so members see different data)."""
        b = self._reshape(batch)
        states = torch.as_tensor(b.states, device=self.device)
        actions = torch.as_tensor(b.actions, device=self.device)
        mean, logvar, logit = self(states, actions)
        target, done = self.targets(b)
        nll = (((mean - target) ** 2) * torch.exp(-logvar) + logvar).mean()
        bce = F.binary_cross_entropy_with_logits(logit, done)
        bound = 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())
        decay = self.cfg.weight_decay * sum((layer.weight**2).sum()
                                            for layer in [*self.hidden, self.head])
        loss = nll + bce + bound + decay
        check_finite("the ensemble loss", loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.parameters())
        check_finite_gradients("the ensemble gradient", self.parameters())
        self.optimizer.step()
        self.train_steps += 1
        return float(loss.detach())

    @torch.no_grad()
    def select_elites(self, batch: TransitionBatch) -> torch.Tensor:
        """Keep the members with the lowest mean-prediction MSE on ``batch`` (best held out;
        the online loop passes replayed transitions, see ``EnsembleConfig.elites``)."""
        e = self.cfg.members
        states = torch.as_tensor(batch.states, device=self.device).expand(e, -1, -1)
        actions = torch.as_tensor(batch.actions, device=self.device).expand(e, -1, -1)
        mean, _, _ = self(states, actions)
        target, _ = self.targets(batch)
        mse = ((mean - target[None]) ** 2).mean(dim=(1, 2))
        self.elite_index.copy_(torch.argsort(mse)[: self.cfg.elites])
        return mse

    @torch.no_grad()
    def rollout(self, s0: torch.Tensor,
                actions: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
                generator: torch.Generator | None = None, sample: bool = True,
                horizon: int | None = None) -> Segment:
        """Roll forward from s0: (B, ds) raw, one step at a time, under actions: (B, H, da) raw,
        or under a policy mapping raw states (B, ds) to raw actions (B, da) that is called at
        every step for ``horizon`` steps.

        Returns a raw-unit Segment whose states are s_0 … s_{H-1} (the prediction after the last
        action is dropped, matching the diffusion model's layout), the actions taken, rewards
        and terminal probabilities r_t, d_t for t = 0 … H-1. Each sample uses a random elite at
        every step and draws from its Gaussian (``sample=False``: the member's mean). Steps
        after a predicted termination are not absorbed: consumers mask them with the terminal
        probabilities.
        """
        s = torch.as_tensor(s0, dtype=torch.float32, device=self.device)
        if callable(actions):
            if horizon is None or horizon < 1:
                raise ValueError("a policy rollout needs a positive horizon")
            policy, b, h = actions, s.shape[0], horizon
        else:
            actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
            policy, (b, h, _) = None, actions.shape
        e = self.cfg.members
        states, taken, rewards, terminals = [s], [], [], []
        for t in range(h):
            a = policy(s) if policy is not None else actions[:, t]
            taken.append(a)
            mean, logvar, logit = self(s.expand(e, -1, -1), a.expand(e, -1, -1))
            pick = self.elite_index[randint(len(self.elite_index), (b,), generator, self.device)]
            rows = torch.arange(b, device=self.device)
            mean, logvar, logit = mean[pick, rows], logvar[pick, rows], logit[pick, rows]
            if sample:
                mean = mean + randn(mean.shape, generator, self.device) * (0.5 * logvar).exp()
            s = s + self.delta_norm.unnormalize(mean[:, : self.obs_dim])
            states.append(s)
            rewards.append(self.reward_norm.unnormalize(mean[:, self.obs_dim :])[:, 0])
            terminals.append(torch.sigmoid(logit))
        return Segment(torch.stack(states[:h], 1), torch.stack(taken, 1),
                       torch.stack(rewards, 1), torch.stack(terminals, 1))

    def save(self, path: str | Path) -> None:
        save_module(self, path, {"kind": "ensemble_world_model", "obs_dim": self.obs_dim,
                                 "action_dim": self.action_dim, "train_steps": self.train_steps,
                                 "config": dataclasses.asdict(self.cfg)})

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> ProbabilisticEnsemble:
        meta = read_meta(path, "ensemble_world_model")
        model = cls(meta["obs_dim"], meta["action_dim"], EnsembleConfig(**meta["config"]), device)
        load_weights(model, path, device)
        model.train_steps = meta["train_steps"]
        return model
