"""Classifier-free advantage guidance: no gradient. The denoiser is trained with the
segment's standardized advantage as an extra input (:func:`advantage_labels`), dropped on a
fraction of the segments, and at sampling its conditional and unconditional predictions are
combined (:class:`ClassifierFreeGuidance`)."""

from __future__ import annotations

import torch
from torch import nn

from agdrl.guidance.advantages import ValueFn
from agdrl.segments import Segment


def advantage_labels(value: ValueFn, seg: Segment, valid: torch.Tensor, gamma: float
                     ) -> torch.Tensor:
    """Labels for classifier-free advantage guidance: the advantage of each real segment
    under the critic over its real transitions, standardized over the batch,

        A = Σ_{t<T} γ^t w_t r_t + γ^T w_T V(s_T) - V(s_0),   w_t = Π_{j<t} (1 - d_j),

    with T the number of real transitions among the segment's H - 1: s_T is s_{H-1}, or the
    state after the episode's last transition, which is real too, so a time limit bootstraps
    from it and only a terminal (w = 0) does not. seg: raw (B, H); valid: (B, H) bool, the
    real transitions (``SegmentBatch.mask``) -> (B,).
    """
    with torch.no_grad():
        real = valid[:, :-1].to(seg.rewards.dtype)  # (B, H - 1)
        last = real.sum(1).long()  # T: (B,)
        alive = torch.cumprod(torch.cat([torch.ones_like(seg.terminals[:, :1]),
                                         1 - seg.terminals[:, :-1]], 1), 1)  # w: (B, H)
        discounts = gamma ** torch.arange(seg.rewards.shape[1], dtype=seg.rewards.dtype,
                                          device=seg.rewards.device)
        values = value(seg.states)  # (B, H)
        rows = torch.arange(len(last), device=last.device)
        advantage = ((discounts[:-1] * alive[:, :-1] * real * seg.rewards[:, :-1]).sum(1)
                     + discounts[last] * alive[rows, last] * values[rows, last] - values[:, 0])
        return (advantage - advantage.mean()) / (advantage.std() + 1e-8)


class ClassifierFreeGuidance(nn.Module):
    """Advantage-conditioned classifier-free guidance, as a wrapper around a labelled denoiser:

        out = out(x_k, ∅) + w · (out(x_k, y*) - out(x_k, ∅))

    where y* is the wanted standardized advantage (``target``, in standard deviations of the
    training labels), ∅ the dropped label and w the guidance weight (1: the conditional model
    alone; > 1 extrapolates away from the unconditional one). The combination is linear, so it
    is the same for x̂_0 and ε prediction. Both predictions come from one batched call.
    """

    def __init__(self, denoiser: nn.Module, target: float = 1.0, weight: float = 2.0):
        super().__init__()
        self.denoiser, self.target, self.weight = denoiser, target, weight

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None, k: torch.Tensor,
                label: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        labels = torch.cat([torch.full((b,), self.target, device=x.device),
                            torch.full((b,), float("nan"), device=x.device)])
        out = self.denoiser(torch.cat([x, x]), None if cond is None else torch.cat([cond, cond]),
                            torch.cat([k, k]), labels)
        conditional, unconditional = out.chunk(2)
        return unconditional + self.weight * (conditional - unconditional)
