"""Small MLPs learned on real single transitions beside the world model: the reward model
(``agdrl.reward_model``: reward guidance, imagined rewards) and the termination classifier
(``agdrl.termination``: imagined terminal flags).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from agdrl.actor_critic import mlp
from agdrl.distributed import average_gradients
from agdrl.faults import check_finite, check_finite_gradients
from agdrl.normalization import RunningNormalizer


class TransitionHead(nn.Module):
    """Running normalizers of states, actions and rewards, and one Adam-trained MLP of
    ``d_in`` inputs and ``d_out`` outputs; subclasses say what goes in and which loss."""

    def __init__(self, obs_dim: int, action_dim: int, d_in: int, d_out: int, hidden: int,
                 layers: int, lr: float, device: torch.device | str):
        super().__init__()
        self.state_norm = RunningNormalizer(obs_dim)
        self.action_norm = RunningNormalizer(action_dim)
        self.reward_norm = RunningNormalizer(1)
        self.net = mlp(d_in, d_out, hidden, layers)
        self.to(device)
        self.device = torch.device(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)

    def update_normalizers(self, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray
                           ) -> None:
        self.state_norm.update(states)
        self.action_norm.update(actions)
        self.reward_norm.update(np.asarray(rewards)[..., None])

    def fit(self, loss: torch.Tensor, what: str) -> float:
        """One optimizer step on ``loss`` (named ``what`` if it is not finite)."""
        check_finite(what, loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.net.parameters())
        check_finite_gradients(f"the gradient of {what}", self.net.parameters())
        self.optimizer.step()
        return loss.item()
