"""Temporal-difference errors and GAE(λ) over segments of H steps (shared by guidance and the
actor-critic update).

Shapes: rewards, values, continues: (B, H); outputs: (B, H - 1) for t = 0 … H-2, where
continues c_t = 1 - d_t says whether s_{t+1} follows s_t within the episode.
"""

from __future__ import annotations

import torch


def td_errors(rewards: torch.Tensor, values: torch.Tensor, continues: torch.Tensor,
              gamma: float) -> torch.Tensor:
    """δ_t = r_t + γ c_t V(s_{t+1}) - V(s_t)."""
    return rewards[:, :-1] + gamma * continues[:, :-1] * values[:, 1:] - values[:, :-1]


def gae(rewards: torch.Tensor, values: torch.Tensor, continues: torch.Tensor, gamma: float,
        lam: float) -> torch.Tensor:
    """GAE(λ), bootstrapped by V at the last state: A_{H-2} = δ_{H-2},
    A_t = δ_t + γ λ c_t A_{t+1}."""
    delta = td_errors(rewards, values, continues, gamma)
    out = [delta[:, -1]]
    for t in range(delta.shape[1] - 2, -1, -1):
        out.append(delta[:, t] + gamma * lam * continues[:, t] * out[-1])
    return torch.stack(out[::-1], 1)


def reality_weights(continues: torch.Tensor) -> torch.Tensor:
    """w_t = Π_{j<t} c_j for t = 0 … H-2: 0 once a terminal has been predicted before t."""
    ones = torch.ones_like(continues[:, :1])
    return torch.cumprod(torch.cat([ones, continues[:, :-2]], 1), 1)
