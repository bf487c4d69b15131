"""Advantage estimates A_t over an imagined segment, the quantity advantage guidance steers by.

Each estimator maps a raw-unit :class:`Segment` (B, H) to A: (B, H - 1), differentiable in the
segment's states: :class:`OneStepAdvantage` (the paper's), :class:`SegmentGAE`, or
:class:`QMinusV` with a learned Q.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from agdrl.returns import gae, td_errors
from agdrl.segments import Segment

ValueFn = Callable[[torch.Tensor], torch.Tensor]
"""A critic V: raw states (..., ds) -> values (...)."""
ActionValueFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A critic Q: raw states (..., ds) and actions (..., da) -> values (...)."""


class AdvantageEstimator(Protocol):
    def __call__(self, seg: Segment) -> torch.Tensor:
        """Advantages A_t, t = 0 … H-2, of a raw-unit segment: (B, H - 1)."""
        ...


def _continues(seg: Segment) -> torch.Tensor:
    """1 - d̂_t with d̂ detached and thresholded at 0.5: (B, H)."""
    return (seg.terminals.detach() <= 0.5).to(seg.states.dtype)


@dataclass
class OneStepAdvantage:
    """A_t = r̂_t + γ (1 - d̂_t) V(ŝ_{t+1}) - V(ŝ_t) (the paper's estimator); r̂, d̂ detached,
    d̂ thresholded at 0.5."""

    value: ValueFn
    gamma: float = 0.99

    def __call__(self, seg: Segment) -> torch.Tensor:
        return td_errors(seg.rewards.detach(), self.value(seg.states), _continues(seg),
                         self.gamma)


@dataclass
class SegmentGAE:
    """GAE(λ) over the predicted segment, bootstrapped by V at its last state:
    A_t = δ_t + γ λ (1 - d̂_t) A_{t+1}, A_{H-2} = δ_{H-2}."""

    value: ValueFn
    gamma: float = 0.99
    lam: float = 0.9

    def __call__(self, seg: Segment) -> torch.Tensor:
        return gae(seg.rewards.detach(), self.value(seg.states), _continues(seg), self.gamma,
                   self.lam)


@dataclass
class QMinusV:
    """A_t = Q(ŝ_t, a_t) - V(ŝ_t) with a learned Q (the seed's definition); a_t detached."""

    q_value: ActionValueFn
    value: ValueFn

    def __call__(self, seg: Segment) -> torch.Tensor:
        states, actions = seg.states[:, :-1], seg.actions[:, :-1].detach()
        return self.q_value(states, actions) - self.value(states)
