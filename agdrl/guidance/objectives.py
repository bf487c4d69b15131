"""The guidance objectives J: raw-unit :class:`Segment` (B, H) -> (B,), whose gradient
state and action guidance follow.

- SAG (sigmoid advantage guidance): J = Σ_t log σ(A_t);
- EAG (exponential advantage guidance): J = Σ_t A_t (log of Π_t exp(A_t); the temperature
  folds into the guidance scale c);
- reward guidance (Diffuser style): J = Σ_t r_φ(ŝ_t, a_t).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from agdrl.guidance.advantages import AdvantageEstimator
from agdrl.segments import Segment


@dataclass
class SigmoidAdvantage:
    """SAG: J = Σ_t log σ(A_t)."""

    advantage: AdvantageEstimator

    def __call__(self, seg: Segment) -> torch.Tensor:
        return F.logsigmoid(self.advantage(seg)).sum(1)


@dataclass
class ExponentialAdvantage:
    """EAG: J = Σ_t A_t, the log of Π_t exp(A_t)."""

    advantage: AdvantageEstimator

    def __call__(self, seg: Segment) -> torch.Tensor:
        return self.advantage(seg).sum(1)


@dataclass
class RewardSum:
    """Reward guidance: J = Σ_t r_φ(ŝ_t, a_t) with a differentiable reward model r_φ:
    (states (B, H, ds), actions (B, H, da)) -> (B, H)."""

    reward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def __call__(self, seg: Segment) -> torch.Tensor:
        return self.reward(seg.states, seg.actions.detach()).sum(1)


Objective = Callable[[Segment], torch.Tensor]
