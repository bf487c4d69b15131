"""Advantage guidance by resampling: the distribution that SAG and EAG aim at, without a step.

The paper's theorem says that sigmoid and exponential advantage guidance sample segments τ
from p(τ) · w(τ), w an increasing function of their advantages: Π_t σ(A_t) (SAG) or
exp(Σ_t A_t / β) (EAG). The gradient forms approximate that with a small step per denoising
step, whose size the sampler's noise schedule sets. Resampling reaches it directly
(self-normalized importance resampling): draw N segments per start state from the unguided
model, weight them by w, keep one per start with probability w / Σ w. The kept segment is one
the model generated, so the states stay as plausible as unguided ones.

Advantages are standardized over the batch (divided by their standard deviation), so that
``scale`` is free of the task's reward units: the log-weight is ``scale`` · J(τ) with J the
objective on standardized advantages (SAG: Σ_t log σ(Â_t); EAG: Σ_t Â_t, so 1 / scale is β
in standard deviations). ``scale`` 0 keeps a uniformly drawn candidate (unguided).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from agdrl.guidance import AdvantageEstimator
from agdrl.segments import Segment


def standardized(values: torch.Tensor) -> torch.Tensor:
    """values / their standard deviation over the batch (detached): in units of their spread,
    so that a guidance scale means the same on every task."""
    return values / (values.detach().std() + 1e-8)


@dataclass
class StandardizedAdvantage:
    """An advantage estimator's A_t / std(A) over the batch."""

    advantage: AdvantageEstimator

    def __call__(self, seg: Segment) -> torch.Tensor:
        return standardized(self.advantage(seg))


@dataclass
class AdvantageResampling:
    """Keeps one of ``candidates`` segments per start with probability ∝ exp(scale · J).

    objective: J of a raw-unit segment batch (B · N, H) -> (B · N,), the segments of one start
    consecutive (``repeat_interleave`` of the starts). ``last_ess`` is the mean effective
    sample size 1 / Σ w² of the normalized weights over the starts, as a fraction of N (1:
    uniform weights, 1 / N: one candidate takes all)."""

    objective: Callable[[Segment], torch.Tensor]
    candidates: int
    scale: float
    last_ess: float = 1.0

    def __call__(self, seg: Segment, generator: torch.Generator | None = None) -> Segment:
        """seg: (B · N, H) candidates -> the kept segments (B, H)."""
        n = self.candidates
        with torch.no_grad():
            log_w = self.scale * self.objective(seg).reshape(-1, n)  # (B, N)
            weights = torch.softmax(log_w, dim=1)
            self.last_ess = float((1.0 / (weights**2).sum(1)).mean()) / n
            if generator is not None and generator.device != weights.device:
                weights = weights.to(generator.device)
            pick = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        rows = torch.arange(len(pick), device=pick.device) * n + pick
        rows = rows.to(seg.states.device)
        return Segment(seg.states[rows], seg.actions[rows], seg.rewards[rows],
                       seg.terminals[rows])
