"""Actor and critic networks of the agent (DESIGN §2.4): policy, V and (for the Q − V
advantage estimator) Q.

Both take states in the environment's own units and normalize them with their own running
statistics, so a critic evaluated on imagined (unnormalized) states sees the units it was
trained on. The actor is a tanh-squashed diagonal Normal: u ~ N(μ(s), σ(s)),
a = c + h · tanh(u) with c, h the centre and half-range of the action box, σ ≥ min_std.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agdrl.normalization import RunningNormalizer
from agdrl.rng import randn

_EPS = 1e-6


def mlp(d_in: int, d_out: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` hidden layers of ``hidden`` units with ELU, then a linear read-out."""
    dims = [d_in] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        mods += [nn.Linear(a, b), nn.ELU()]
    return nn.Sequential(*mods, nn.Linear(dims[-1], d_out))


class Actor(nn.Module):
    """Tanh-squashed Normal policy over a bounded action box."""

    def __init__(self, obs_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 hidden: int = 256, layers: int = 2, min_std: float = 0.1,
                 init_std: float = 1.0):
        super().__init__()
        low = torch.as_tensor(np.asarray(action_low), dtype=torch.float32)
        high = torch.as_tensor(np.asarray(action_high), dtype=torch.float32)
        if low.shape != high.shape or not torch.all(high > low):
            raise ValueError("the action box needs low < high in every dimension")
        if min_std <= 0 or init_std <= min_std:
            raise ValueError(f"need 0 < min_std < init_std, got {min_std}, {init_std}")
        self.action_dim = low.numel()
        self.min_std = min_std
        self.register_buffer("center", (high + low) / 2)
        self.register_buffer("half_range", (high - low) / 2)
        self.state_norm = RunningNormalizer(obs_dim)
        self.net = mlp(obs_dim, 2 * self.action_dim, hidden, layers)
        # softplus(b) + min_std = init_std at a zero pre-activation
        self._std_bias = math.log(math.expm1(init_std - min_std))

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """states (..., ds) raw -> mean and std of the pre-squash Normal, each (..., da)."""
        out = self.net(self.state_norm.normalize(states.float()))
        mean, raw_std = out.chunk(2, dim=-1)
        return mean, self.min_std + F.softplus(raw_std + self._std_bias)

    def squash(self, u: torch.Tensor) -> torch.Tensor:
        return self.center + self.half_range * torch.tanh(u)

    def unsquash(self, actions: torch.Tensor) -> torch.Tensor:
        """Pre-squash u of actions, clamped just inside the box so atanh stays finite."""
        y = ((actions - self.center) / self.half_range).clamp(-1 + _EPS, 1 - _EPS)
        return torch.atanh(y)

    def log_prob(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log π(a | s) of raw actions (..., da) -> (...), with the change of variables."""
        mean, std = self(states)
        u = self.unsquash(actions)
        log_normal = torch.distributions.Normal(mean, std).log_prob(u)
        log_jacobian = torch.log(self.half_range * (1 - torch.tanh(u) ** 2) + _EPS)
        return (log_normal - log_jacobian).sum(-1)

    def sample(self, states: torch.Tensor, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        mean, std = self(states)
        noise = randn(mean.shape, generator, mean.device)
        return self.squash(mean + std * noise)

    def mode(self, states: torch.Tensor) -> torch.Tensor:
        """The deterministic action c + h · tanh(μ(s))."""
        return self.squash(self(states)[0])


class Critic(nn.Module):
    """State-value function V(s) on raw states (..., ds) -> (...)."""

    def __init__(self, obs_dim: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.state_norm = RunningNormalizer(obs_dim)
        self.net = mlp(obs_dim, 1, hidden, layers)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(self.state_norm.normalize(states))[..., 0]


class ActionCritic(nn.Module):
    """Action-value function Q(s, a) on raw states (..., ds) and raw actions (..., da) -> (...);
    actions enter rescaled to [-1, 1] by the action box."""

    def __init__(self, obs_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 hidden: int = 256, layers: int = 2):
        super().__init__()
        low = torch.as_tensor(np.asarray(action_low), dtype=torch.float32)
        high = torch.as_tensor(np.asarray(action_high), dtype=torch.float32)
        self.register_buffer("center", (high + low) / 2)
        self.register_buffer("half_range", (high - low) / 2)
        self.state_norm = RunningNormalizer(obs_dim)
        self.net = mlp(obs_dim + low.numel(), 1, hidden, layers)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        scaled = (actions - self.center) / self.half_range
        return self.net(torch.cat([self.state_norm.normalize(states), scaled], -1))[..., 0]
