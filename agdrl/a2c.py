"""The actor-critic update on imagined segments (DESIGN §2.4).

A2C with GAE(λ) bootstrapped by a slow target critic, advantages standardized over the batch
(or, with ``actor_gradient='q'``, the reparameterized slope of a learned Q(s, a) instead of
REINFORCE), an entropy bonus, gradient clipping, and a line search on the actor's step: the
Adam update direction Δθ is computed once, then scaled by η so that the mean change of
log π(a|s) on the batch lands within ``tolerance`` of ``target_logp_change`` (η ≤ 1, so the
step never exceeds the configured learning rate). Scaling the parameter change, instead of
re-running the optimizer, leaves Adam's moment estimates as one step left them.

Under torchrun (:mod:`agdrl.distributed`) each rank updates on its own segments; gradients,
the advantage statistics and the line search's log-prob change are averaged over ranks. The
update equals one process's on all ranks' segments together when every rank's batch has the
same number of steps before a terminal; otherwise only nearly, since each rank divides its
losses by its own count and the log-prob change is a mean of per-rank means.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from agdrl.actor_critic import ActionCritic, Actor, Critic, mlp
from agdrl.config import ActorCriticConfig
from agdrl.distributed import average_gradients, mean_over_ranks, mean_std_over_ranks
from agdrl.faults import check_finite
from agdrl.returns import gae, reality_weights
from agdrl.rng import randn
from agdrl.segments import Segment


class ActorCriticAgent(nn.Module):
    """Actor, critic and slow target critic with their optimizers; with ``learn_q`` (Q − V
    advantages) or the actor's 'q' gradient also an action-value critic Q(s, a), regressed on
    the same λ-returns."""

    @staticmethod
    def parameter_count(obs_dim: int, action_dim: int, cfg: ActorCriticConfig,
                        learn_q: bool = False) -> int:
        """Trained parameters of the actor, the critic and (``learn_q``, or the actor's 'q'
        gradient) the action-value critic, counted on the meta device, where nothing is
        allocated."""
        learn_q = learn_q or cfg.actor_gradient == "q"
        with torch.device("meta"):
            nets = [mlp(obs_dim, 2 * action_dim, cfg.hidden, cfg.layers),
                    mlp(obs_dim, 1, cfg.hidden, cfg.layers)]
            if learn_q:
                nets.append(mlp(obs_dim + action_dim, 1, cfg.hidden, cfg.layers))
        return sum(p.numel() for net in nets for p in net.parameters())

    def __init__(self, obs_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 cfg: ActorCriticConfig, device: torch.device | str = "cpu",
                 learn_q: bool = False):
        super().__init__()
        self.cfg = cfg
        learn_q = learn_q or cfg.actor_gradient == "q"
        self.actor = Actor(obs_dim, action_low, action_high, cfg.hidden, cfg.layers,
                           cfg.min_std, cfg.init_std)
        self.critic = Critic(obs_dim, cfg.hidden, cfg.layers)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.q_critic = (ActionCritic(obs_dim, action_low, action_high, cfg.hidden, cfg.layers)
                         if learn_q else None)
        self.to(device)
        self.device = torch.device(device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.q_opt = (None if self.q_critic is None
                      else torch.optim.Adam(self.q_critic.parameters(), lr=cfg.critic_lr))
        self.updates = 0

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers by checkpoint name."""
        opts = {"actor": self.actor_opt, "critic": self.critic_opt}
        if self.q_opt is not None:
            opts["q_critic"] = self.q_opt
        return opts

    def update_normalizers(self, states: np.ndarray) -> None:
        """Fold real states into the actor's and critics' input statistics."""
        for net in (self.actor, self.critic, self.critic_target, self.q_critic):
            if net is not None:
                net.state_norm.update(states)

    def _clip(self, params) -> float:
        if self.cfg.grad_clip > 0:
            return float(nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        return float(torch.sqrt(sum((p.grad**2).sum() for p in params if p.grad is not None)))

    def _gradient(self, what: str, loss: torch.Tensor, net: nn.Module,
                  opt: torch.optim.Optimizer) -> float:
        """Backpropagate ``loss`` into ``net`` (averaged over ranks, clipped) without stepping;
        returns the norm before clipping. Raises :class:`NonFiniteError` on a non-finite loss
        or gradient."""
        opt.zero_grad(set_to_none=True)
        check_finite(f"{what} loss", loss)
        loss.backward()
        average_gradients(net.parameters())
        grad_norm = self._clip(list(net.parameters()))
        check_finite(f"{what} gradient", grad_norm)
        return grad_norm

    def update(self, seg: Segment, generator: torch.Generator | None = None
               ) -> dict[str, float]:
        """One actor and one critic step on imagined segments (raw units, no graph); the critics
        learn from every row, the actor from those ``seg.steered`` does not mark. ``generator``
        draws the fresh actions of the 'q' actor gradient. Non-finite
        inputs, losses or gradients raise :class:`NonFiniteError` before any network steps, so
        a skipped batch leaves the critic, the Q-critic and the actor all unchanged."""
        cfg = self.cfg
        check_finite("the imagined segment", seg.states, seg.actions, seg.rewards,
                     seg.terminals)
        states = seg.states.detach().to(self.device)
        actions = seg.actions.detach().to(self.device)
        rewards = seg.rewards.detach().to(self.device)
        continues = (seg.terminals.detach().to(self.device) <= 0.5).float()
        weights = reality_weights(continues)  # (B, H-1)
        # the actor learns only from rows whose actions are samples of π
        actor_weights = (weights if seg.steered is None
                         else weights * (~seg.steered.to(self.device))[:, None].float())
        with torch.no_grad():
            target_values = self.critic_target(states)
            advantages = gae(rewards, target_values, continues, cfg.gamma, cfg.lam)
            returns = advantages + target_values[:, :-1]
            if cfg.normalize_advantages:
                valid = actor_weights > 0
                mean, std = mean_std_over_ranks(advantages[valid])
                advantages = (advantages - mean) / (std + 1e-8)

        # All gradients first, then all steps: none of the three losses depends on the
        # others' parameters (the targets come from the target critic).
        # critic: regress V(s_t) on the λ-returns of the target critic
        values = self.critic(states[:, :-1])
        critic_loss = 0.5 * (weights * (values - returns) ** 2).sum() / weights.sum()
        critic_grad = self._gradient("the critic", critic_loss, self.critic, self.critic_opt)
        metrics = {}
        if self.q_critic is not None:  # Q(s_t, a_t) on the same λ-returns
            q_values = self.q_critic(states[:, :-1], actions[:, :-1])
            q_loss = 0.5 * (weights * (q_values - returns) ** 2).sum() / weights.sum()
            self._gradient("the Q-critic", q_loss, self.q_critic, self.q_opt)
            metrics["q_loss"] = q_loss.item()

        # actor: the (standardized) advantages' REINFORCE or Q's slope, plus an entropy bonus
        s, a = states[:, :-1], actions[:, :-1]
        logp = self.actor.log_prob(s, a)
        mean, std = self.actor(s)
        entropy = torch.distributions.Normal(mean, std).entropy().sum(-1)
        if cfg.actor_gradient == "q":
            objective = self._q_objective(s, mean, std, actor_weights, generator)
        else:
            objective = advantages * logp
        actor_loss = -(actor_weights * (objective + cfg.entropy_weight * entropy)).sum()
        actor_loss = actor_loss / actor_weights.sum()
        actor_grad = self._gradient("the actor", actor_loss, self.actor, self.actor_opt)

        self.critic_opt.step()
        if self.q_critic is not None:
            self.q_opt.step()
        before = [p.detach().clone() for p in self.actor.parameters()]
        self.actor_opt.step()
        scale, change = self._line_search(before, s, a, logp.detach(), actor_weights)

        with torch.no_grad():
            for tp, p in zip(self.critic_target.parameters(), self.critic.parameters(),
                             strict=True):
                tp.lerp_(p, 1 - cfg.target_ema)
        self.updates += 1
        return {**metrics, "critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(),
                "actor_grad_norm": actor_grad, "critic_grad_norm": critic_grad,
                "logp_change": change, "actor_step_scale": scale,
                "entropy": entropy.mean().item(), "value": values.mean().item(),
                "return": float(returns.mean())}

    def _q_objective(self, states: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                     weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Q(s, squash(μ(s) + σ(s) ε)) / mean |Q| at fresh ε (B, H-1, da): differentiable in the
        actor through μ and σ, with Q's weights held (its own step is its regression alone);
        the divisor, a constant, makes the entropy weight scale-free."""
        noise = randn(mean.shape, generator, mean.device)
        held = {name: p.detach() for name, p in self.q_critic.named_parameters()}
        q = torch.func.functional_call(self.q_critic, held,
                                       (states, self.actor.squash(mean + std * noise)))
        with torch.no_grad():
            scale = mean_over_ranks((weights * q.abs()).sum() / weights.sum())
        return q / (scale + 1e-8)

    @torch.no_grad()
    def _line_search(self, before: list[torch.Tensor], states: torch.Tensor,
                     actions: torch.Tensor, old_logp: torch.Tensor, weights: torch.Tensor
                     ) -> tuple[float, float]:
        """Scale the actor step Δθ by η ∈ (0, 1] toward the wanted mean |Δ log π|."""
        cfg = self.cfg
        params = list(self.actor.parameters())
        step = [p.detach() - b for p, b in zip(params, before, strict=True)]

        def change_at(eta: float) -> float:
            for p, b, d in zip(params, before, step, strict=True):
                p.copy_(b + eta * d)
            diff = (self.actor.log_prob(states, actions) - old_logp).abs()
            return float(mean_over_ranks((weights * diff).sum() / weights.sum()))

        eta, change = 1.0, change_at(1.0)
        if cfg.target_logp_change <= 0:
            return eta, change
        lo, hi = 0.0, 1.0
        for _ in range(30):  # bisection on η; the change grows with η near 0
            if abs(change - cfg.target_logp_change) <= (cfg.linesearch_tolerance
                                                        * cfg.target_logp_change):
                break
            if change > cfg.target_logp_change:
                hi = eta
            elif eta == 1.0:
                break  # even the full step changes log π too little: take it
            else:
                lo = eta
            eta = (lo + hi) / 2
            change = change_at(eta)
        return eta, change
