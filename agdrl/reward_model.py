"""A learned reward function r_φ(s, a) on real transitions: for reward guidance (the seed's
"basic diffusion MBRL" row: Diffuser-style guidance by the gradient of Σ r̂ on the states), and
to relabel the rewards of imagined segments (``ImaginationConfig.reward``)."""

from __future__ import annotations

import numpy as np
import torch

from agdrl.buffer import ReplayBuffer, TransitionBatch
from agdrl.segments import Segment
from agdrl.transition_heads import TransitionHead


class RewardModel(TransitionHead):
    """MLP regression of rewards on [s, a]; raw units in and out, differentiable in s."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 256, layers: int = 2,
                 lr: float = 1e-3, device: torch.device | str = "cpu"):
        super().__init__(obs_dim, action_dim, obs_dim + action_dim, 1, hidden, layers, lr,
                         device)

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
        return self.fit(((self.net(x.float()) - target) ** 2).mean(), "the reward-model loss")

    def relabel(self, seg: Segment) -> Segment:
        """``seg`` with every reward r_t replaced by this model's r(s_t, a_t); differentiable
        in the states (guidance scores relabelled segments)."""
        return Segment(seg.states, seg.actions,
                       self(seg.states, seg.actions).to(seg.rewards.dtype), seg.terminals)


def fit_reward_model(buffer: ReplayBuffer, steps: int, rng: np.random.Generator
                     ) -> tuple[RewardModel, float]:
    """A reward model fitted to ``buffer``'s transitions (normalizers from all of them,
    ``steps`` steps on batches of 256); returns it and its last loss."""
    n = buffer.size
    reward_model = RewardModel(buffer.obs_dim, buffer.action_dim)
    reward_model.update_normalizers(buffer.obs[:n], buffer.actions[:n], buffer.rewards[:n])
    loss = float("nan")
    for _ in range(steps):
        loss = reward_model.train_step(buffer.sample_transitions(256, rng))
    return reward_model, loss
