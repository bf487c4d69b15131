"""A learned reward function r_φ(s, a) on real transitions, for reward guidance (the seed's
"basic diffusion MBRL" row: Diffuser-style guidance by the gradient of Σ r̂ on the states)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from agdrl.actor_critic import mlp
from agdrl.buffer import TransitionBatch
from agdrl.distributed import average_gradients
from agdrl.faults import check_finite
from agdrl.normalization import RunningNormalizer


class RewardModel(nn.Module):
    """MLP regression of rewards on [s, a]; raw units in and out, differentiable in s."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 256, layers: int = 2,
                 lr: float = 1e-3, device: torch.device | str = "cpu"):
        super().__init__()
        self.state_norm = RunningNormalizer(obs_dim)
        self.action_norm = RunningNormalizer(action_dim)
        self.reward_norm = RunningNormalizer(1)
        self.net = mlp(obs_dim + action_dim, 1, hidden, layers)
        self.to(device)
        self.device = torch.device(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)

    def update_normalizers(self, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray
                           ) -> None:
        self.state_norm.update(states)
        self.action_norm.update(actions)
        self.reward_norm.update(np.asarray(rewards)[..., None])

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """states (..., ds), actions (..., da) raw -> predicted rewards (...) raw."""
        x = torch.cat([self.state_norm.normalize(states), self.action_norm.normalize(actions)], -1)
        return self.reward_norm.unnormalize(self.net(x.float()))[..., 0]

    def train_step(self, batch: TransitionBatch) -> float:
        """One MSE step in normalized reward units."""
        states = torch.as_tensor(batch.states, device=self.device)
        actions = torch.as_tensor(batch.actions, device=self.device)
        target = self.reward_norm.normalize(torch.as_tensor(batch.rewards, device=self.device
                                                            )[..., None].float())
        x = torch.cat([self.state_norm.normalize(states), self.action_norm.normalize(actions)], -1)
        loss = ((self.net(x.float()) - target) ** 2).mean()
        check_finite("the reward-model loss", loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.net.parameters())
        self.optimizer.step()
        return loss.item()
