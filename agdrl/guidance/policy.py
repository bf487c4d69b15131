"""Hooks on the conditioning actions: policy guidance (the imagined actions follow the current
policy, as in PolyGRAD) and pinned actions (a planner's or a user's fixed action rows)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from agdrl.actor_critic import Actor
from agdrl.diffusion.samplers import StepState
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.rng import randn


@dataclass
class PolicyGuidance:
    """A denoising hook that makes the imagined actions follow the current policy.

    mode 'sample': the imagined actions become samples of π at the predicted states,
    a_t = squash(u_t) with u_t → μ(ŝ_t) + σ(ŝ_t) ε_t, ε: (B, H, da) ~ N(0, I) drawn once per
    chain. States and actions are solved for together, by iteration: each step predicts the
    states under the current actions, then moves the pre-squash actions a fraction β
    (``relaxation``) of the way to π's sample at those states,
    u ← u + β (μ(ŝ) + σ(ŝ) ε − u) (the first step replaces the initial noise). At a fixed
    point the standardized actions z = (u − μ(s)) / σ(s) are exactly ε at the segment's own
    states, under any sampler, and there is no δ to tune. β = 1 (replace the actions each
    step) lets a trained, sharp policy and the states it steers alternate between two
    solutions: with a 15k-step Hopper policy and DDIM-8 the returned states paired with
    actions at z RMS 7.2 (up to 15 at the segment's end), and the simulator replaying those
    actions missed the states by 0.45 (normalized MSE); at β = 0.5, 1.26 and 0.15, and with
    the sampler's 4 settle steps (which continue the iteration at the clean end of the chain)
    1.10 and 0.037 (docs/guidance.md, policy guidance).
    ``last_spread`` is the RMS of z at the last call's predicted states, after its update.

    mode 'pull' (PolyGRAD's policy guidance): at every step, in the policy's pre-squash space
    u (where π(· | ŝ_t) is N(μ, σ)) and at the predicted states ŝ_t: clamp u to μ ± clip_std·σ,
    move it up the log-likelihood, u ← u + min(δ / σ², 1) (μ - u) (a gradient step
    δ ∇_u log N(u; μ, σ), capped so that it never overshoots μ), squash back to an action, and
    add the step's noise (``noise_std`` · ε in the world model's normalized action space; none
    at the last step or under deterministic DDIM). δ (``log_delta``) is tuned online by
    :meth:`adapt` toward unit root-mean-square of the final z = (u - μ) / σ, as on-policy
    samples have; the RMS, not the standard deviation, so that an offset from μ counts. The cap
    keeps the spread decreasing in δ: an uncapped step with δ > 2σ² overshoots μ and amplifies
    z, which the tuning would answer with a still larger δ until it overflowed.

    Why 'sample' is the default: the pulled actions start as noise around the data's action
    mean; with few denoising steps they are not samples of π, and under deterministic DDIM
    (η = 0) the final z is a fixed contraction of the initial noise that no δ corrects. With
    them the agent did not learn Reacher-v5 (return −12 → −71 in 3k steps; 'sample': −12 →
    −8.4; docs/guidance.md). Both modes evaluate the actor without gradients, so
    the imagined actions never carry a graph back into it (DESIGN §2.6, defect 5).
    """

    model: DiffusionWorldModel
    actor: Actor
    delta: float = 0.005
    clip_std: float = 3.0
    adapt_lr: float = 0.1
    mode: Literal["sample", "pull"] = "sample"
    relaxation: float = 0.5
    log_delta: float = field(init=False)
    _spread: torch.Tensor | None = field(default=None, init=False, repr=False)
    _noise: torch.Tensor | None = field(default=None, init=False, repr=False)
    _u: torch.Tensor | None = field(default=None, init=False, repr=False)
    _std: torch.Tensor | None = field(default=None, init=False, repr=False)
    chain_tensors: ClassVar[tuple[str, ...]] = ("_noise", "_u", "_std", "_spread")
    """As :attr:`StateGuidance.chain_tensors`."""

    def __post_init__(self):
        if self.delta <= 0 or self.clip_std <= 0:
            raise ValueError("policy guidance needs delta > 0 and clip_std > 0")
        if not 0.0 < self.relaxation <= 1.0:
            raise ValueError(f"policy-guidance relaxation must be in (0, 1], got "
                             f"{self.relaxation}")
        if self.mode not in ("sample", "pull"):
            raise ValueError(f"unknown policy-guidance mode {self.mode!r}; choose 'sample' or "
                             "'pull'")
        self.log_delta = math.log(self.delta)

    @property
    def last_spread(self) -> float:
        """RMS of the standardized actions z at the last chain's end (NaN before any); a
        tensor until read, so that the chain itself never waits for a GPU."""
        return float("nan") if self._spread is None else float(self._spread)

    @torch.no_grad()
    def __call__(self, state: StepState) -> None:
        states = self.model.decode(state.x0, state.cond).states
        mean, std = self.actor(states)
        if self.mode == "sample":
            self._std = std  # σ at this step's predicted states, for action guidance
            if state.index == 0:
                self._noise = randn(mean.shape, state.generator, mean.device)
                self._u = mean + std * self._noise
            else:
                self._u = self._u + self.relaxation * (mean + std * self._noise - self._u)
            state.cond = self.model.action_norm.normalize(self.actor.squash(self._u))
            if state.k_prev < 0:
                self._spread = ((self._u - mean) / std).pow(2).mean().sqrt()
            return
        u = self.actor.unsquash(self.model.action_norm.unnormalize(state.cond))
        u = torch.maximum(torch.minimum(u, mean + self.clip_std * std), mean - self.clip_std * std)
        u = u + (math.exp(self.log_delta) / std**2).clamp(max=1.0) * (mean - u)
        cond = self.model.action_norm.normalize(self.actor.squash(u))
        if state.k_prev >= 0:
            cond = cond + state.noise_std * randn(cond.shape, state.generator, cond.device)
        else:
            self._spread = ((u - mean) / std).pow(2).mean().sqrt()
        state.cond = cond

    @torch.no_grad()
    def on_policy_actions(self, states: torch.Tensor) -> torch.Tensor:
        """'sample' mode, after a chain: a_t = squash(μ(s_t) + σ(s_t) ε_t) at raw ``states``
        (B, H, ds) with the chain's ε -> raw actions (B, H, da)."""
        if self.mode != "sample" or self._noise is None:
            raise RuntimeError("on_policy_actions needs a chain sampled in 'sample' mode")
        mean, std = self.actor(states)
        return self.actor.squash(mean + std * self._noise)

    def adapt(self) -> None:
        """One SGD step on log δ toward unit RMS of the standardized final actions: a wider
        spread or an offset asks for a stronger pull toward the policy's mean ('pull' only)."""
        if self.mode == "pull" and not math.isnan(self.last_spread):
            self.log_delta += self.adapt_lr * (self.last_spread - 1.0)


@dataclass
class PinnedActions:
    """A denoising hook that holds the first A rows' actions at ``actions``: (A, H, da) in the
    world model's normalized action space (the rows' trajectories are the model's prediction
    of what those actions do)."""

    actions: torch.Tensor

    def __call__(self, state: StepState) -> None:
        rows = self.actions.shape[0]
        state.cond = torch.cat([self.actions, state.cond[rows:]])
