"""Trajectory segments as torch tensors, in the environment's own (unnormalized) units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Segment:
    """B segments of H steps: states (B, H, ds), actions (B, H, da), rewards (B, H),
    terminals (B, H) in [0, 1] (a model's prediction; threshold at 0.5); ``steered`` (B,) bool
    marks imagined rows whose actions advantage guidance moved away from the policy's samples
    (None: no row's were)."""

    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminals: torch.Tensor
    steered: torch.Tensor | None = None

    @classmethod
    def from_numpy(cls, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                   terminals: np.ndarray, device: torch.device | str = "cpu") -> Segment:
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=torch.float32, device=device)

        return cls(t(states), t(actions), t(rewards), t(terminals))
