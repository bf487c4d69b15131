"""Advantage guidance by resampling: the distribution that SAG and EAG aim at, without a step.

The paper's theorem says that sigmoid and exponential advantage guidance sample segments τ
from p(τ) · w(τ), w an increasing function of the advantage: σ(A) (SAG) or exp(A / β) (EAG).
The gradient forms approximate that with a small step per denoising step, whose size the
sampler's noise schedule sets. Resampling reaches it directly (self-normalized importance
resampling): draw N segments per start state from the unguided model, weight them by w, keep
one per start with probability w / Σ w. The kept segment is one the model generated, so its
states are as plausible as unguided ones.

The advantage of a segment is A(τ) = Σ_t γ^t w_t A_t over its steps (w_t: 0 after a predicted
terminal); with one-step TD advantages it is the segment's discounted return bootstrapped by
V at its last state, minus V(s_0). Within a start's N candidates it is standardized,
z = (A − mean) / std: the candidates are samples of π, so their mean estimates V(s_0)'s share
that an imperfect critic gets wrong, and the spread makes ``scale`` c free of reward units.
Log-weights: log σ(c z) (SAG) or c z (EAG, β = 1 / c standard deviations). c = 0 keeps a
uniformly drawn candidate (unguided).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from agdrl.guidance.advantages import AdvantageEstimator
from agdrl.returns import reality_weights
from agdrl.segments import Segment


@dataclass
class SegmentAdvantage:
    """A(τ) = Σ_t γ^t w_t A_t of a raw-unit segment batch (B, H) -> (B,), w_t = 0 once a
    terminal (flag > 0.5) has been predicted before t."""

    advantage: AdvantageEstimator
    gamma: float

    def __call__(self, seg: Segment) -> torch.Tensor:
        a = self.advantage(seg)  # (B, H - 1)
        weights = reality_weights((seg.terminals <= 0.5).to(a.dtype))
        discounts = self.gamma ** torch.arange(a.shape[1], device=a.device, dtype=a.dtype)
        return (a * weights * discounts).sum(1)


@dataclass
class AdvantageResampling:
    """Keeps one of ``candidates`` segments per start, with probability ∝ σ(c z) ('sag') or
    exp(c z) ('eag'), z the score standardized among the start's candidates.

    score: a segment batch (B · N, H) -> (B · N,), the candidates of one start consecutive
    (``repeat_interleave`` of the starts). ``last_ess`` is the mean effective sample size
    1 / Σ w² of the normalized weights over the starts, as a fraction of N (1: uniform
    weights; 1 / N: one candidate takes all)."""

    score: Callable[[Segment], torch.Tensor]
    form: Literal["sag", "eag"]
    candidates: int
    scale: float
    last_ess: float = 1.0

    def log_weights(self, score: torch.Tensor) -> torch.Tensor:
        """score (B, N) -> unnormalized log-weights (B, N)."""
        z = (score - score.mean(1, keepdim=True)) / (score.std(1, keepdim=True) + 1e-8)
        return F.logsigmoid(self.scale * z) if self.form == "sag" else self.scale * z

    def __call__(self, seg: Segment, generator: torch.Generator | None = None) -> Segment:
        """seg: (B · N, H) candidates -> the kept segments (B, H)."""
        with torch.no_grad():
            weights = torch.softmax(self.log_weights(
                self.score(seg).reshape(-1, self.candidates)), dim=1)
            self.last_ess = float((1.0 / (weights**2).sum(1)).mean()) / self.candidates
            if generator is not None and generator.device != weights.device:
                weights = weights.to(generator.device)
            pick = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        rows = (torch.arange(len(pick), device=pick.device) * self.candidates + pick)
        rows = rows.to(seg.states.device)
        return Segment(seg.states[rows], seg.actions[rows], seg.rewards[rows],
                       seg.terminals[rows])
