"""A termination classifier P(d = 1 | s, a, s') learned on real transitions.

Why: the diffusion model's terminal channel is generated with the whole segment and learns
where segments of the replay data tend to end, not what ends them. On InvertedPendulum-v5 it
puts a terminal in 89–95% of the segments imagined under a policy that really terminates in
2–4% of them, and in 81–89% of segments with no imagined state past the termination bound
(``benchmarks/termination_check.py``, docs/results.md). Termination in the MuJoCo tasks is a
function of the transition, which a per-transition classifier learns and extrapolates, as the
ensemble's termination head does. It brings those 89% to 37% there, but the return only a
little: the imagined states carry the same habit (docs/results.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agdrl.buffer import TransitionBatch
from agdrl.segments import Segment
from agdrl.transition_heads import TransitionHead


class TerminationModel(TransitionHead):
    """Logistic MLP on normalized [s, a, s']; raw units in, probabilities out."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 256, layers: int = 2,
                 lr: float = 1e-3, device: torch.device | str = "cpu"):
        super().__init__(obs_dim, action_dim, 2 * obs_dim + action_dim, 1, hidden, layers, lr,
                         device)

    def logits(self, states: torch.Tensor, actions: torch.Tensor, next_states: torch.Tensor
               ) -> torch.Tensor:
        """states, next_states (..., ds), actions (..., da) raw -> logits (...)."""
        x = torch.cat([self.state_norm.normalize(states), self.action_norm.normalize(actions),
                       self.state_norm.normalize(next_states)], -1)
        return self.net(x.float())[..., 0]

    def forward(self, states: torch.Tensor, actions: torch.Tensor, next_states: torch.Tensor
                ) -> torch.Tensor:
        """P(s' is terminal): (...)."""
        return torch.sigmoid(self.logits(states, actions, next_states))

    def train_step(self, batch: TransitionBatch) -> float:
        """One binary cross-entropy step against the true terminal flags (not truncations)."""
        def t(a: object) -> torch.Tensor:
            return torch.as_tensor(a, device=self.device)

        logits = self.logits(t(batch.states), t(batch.actions), t(batch.next_states))
        target = t(batch.terminals).float()
        return self.fit(F.binary_cross_entropy_with_logits(logits, target),
                        "the termination-model loss")

    def relabel(self, seg: Segment) -> Segment:
        """``seg`` with the terminal flag of every transition s_t -> s_{t+1} (t < H-1) replaced
        by this model's probability; the last flag, which no return uses, is kept.
        Differentiable in the states (guidance scores relabelled segments)."""
        p = self(seg.states[:, :-1], seg.actions[:, :-1], seg.states[:, 1:])
        return Segment(seg.states, seg.actions, seg.rewards,
                       torch.cat([p.to(seg.terminals.dtype), seg.terminals[:, -1:]], 1))
