"""Guidance of imagined segments during denoising (DESIGN §2.3, steps 3 and 4).

Policy guidance (PolyGRAD) on the conditioning actions — see :class:`PolicyGuidance` — and
state guidance on the predicted states:

At a denoising step with posterior std σ_k, the predicted clean states ŝ (normalized, inside
x̂_0) are moved up the gradient of an objective J evaluated in the environment's own units:

    ŝ ← ŝ + c · w_k · ∇_ŝ J(ŝ),   w_k = σ_k⁴ ("sigma4", the paper's)
                                   or ŝ ← ŝ + c · σ_k · ∇_ŝ J / rms(∇_ŝ J) ("normalized")
                                   or ŝ ← ŝ + c · (ᾱ_{k'} − ᾱ_k) · ∇_ŝ J / rms(∇_ŝ J) ("total")

and the sampler then recomputes the step's mean from the shifted x̂_0. The "normalized" mode
moves each segment by c noise standard deviations of the step whatever the size of the raw
gradient, so its scale does not depend on how σ_k⁴ happens to be distributed over a given
schedule and step count. The "total" mode weights each jump k → k' by the signal it adds,
ᾱ_{k'} − ᾱ_k: the weights telescope to ᾱ at the last guided jump's target minus ᾱ at the
first step (about 1 − 0 on a full grid), so c is the total movement in units of rms(∇J)
whatever the number of denoising steps.

The gradient is zero on the pinned s_0 and on the last state; the last denoising step is never
guided. Unnormalization is differentiable, so the critic is evaluated
on states in the units it was trained on (DESIGN §2.6, defect 1).

Objectives (each maps a raw-unit :class:`Segment` to J: (B,)):
- :class:`SigmoidAdvantage` (SAG): J = Σ_t log σ(A_t);
- :class:`ExponentialAdvantage` (EAG): J = Σ_t A_t (log of exp(A_t); the temperature folds
  into c);
- :class:`RewardSum` (reward guidance, Diffuser style): J = Σ_t r_φ(ŝ_t, a_t).
Advantages come from an estimator over the predicted segment: :class:`OneStepAdvantage`
(the paper's), :class:`SegmentGAE`, or :class:`QMinusV` with a learned Q (the seed's
definition).

Classifier-free advantage guidance (:class:`ClassifierFreeGuidance`) needs no gradient: the
denoiser is trained with the segment's standardized advantage as an extra input
(:func:`advantage_labels`), dropped on a fraction of the segments, and at sampling its
conditional and unconditional predictions are combined.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from agdrl.actor_critic import Actor
from agdrl.cuda_graph import capturing
from agdrl.diffusion.samplers import DenoisingHook, StepState
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.faults import NonFiniteError
from agdrl.returns import gae, td_errors
from agdrl.rng import randn
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


def state_gradient(objective: Objective, model: DiffusionWorldModel, x0: torch.Tensor,
                   cond: torch.Tensor | None, guide_last: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """∇_ŝ J with respect to the normalized predicted states inside x0: (B, H, Dx).

    Returns (gradient (B, H, ds), J (B,)); the gradient is zeroed on the pinned s_0 and, as in
    the reference, on s_{H-1} unless ``guide_last``. Everything but the states is detached.

    Why the last state matters: for any objective linear in one-step advantages (EAG with TD
    or GAE), Σ_t A_t telescopes, and the gradient at an interior state is a *negative*
    multiple of ∇V (−(1 − γ)∇V(ŝ_t) for EAG with TD): the only term that raises V is the one
    on s_{H-1}, which the reference zeroes. SAG is no exception: the gradient of
    Σ_t log σ(A_t) at an interior s_j is (γ σ(−A_{j−1}) − σ(−A_j)) ∇V(ŝ_j), which evens out the
    one-step advantages along the segment rather than raising V, and is −(1 − γ) σ(−A) ∇V(ŝ_j)
    where they are equal (``guide_last_state`` keeps the last term).
    """
    ds = model.obs_dim
    with torch.enable_grad():
        states = x0[..., :ds].detach().requires_grad_(True)
        seg = model.decode(torch.cat([states, x0[..., ds:].detach()], -1),
                           None if cond is None else cond.detach())
        value = objective(seg)
        (grad,) = torch.autograd.grad(value.sum(), states)
    grad = grad.clone()
    grad[:, 0] = 0.0
    if not guide_last:
        grad[:, -1] = 0.0
    return grad, value.detach()


@dataclass
class StateGuidance:
    """A denoising hook that shifts the predicted states up ∇J (see the module docstring).

    scale: c. mode: 'sigma4' (paper), 'normalized' or 'total'. max_step: guide only steps with
    k ≤ max_step (None: all but the last). guide_last: also move the segment's last state
    (see :func:`state_gradient`). steered_fraction: the share of the batch, its first rows,
    that the hook moves (:meth:`steered_rows`); the others are sampled unguided.
    ``last_grad_rms`` and ``last_objective`` hold the batch means of |∇J| (RMS over entries)
    and J at the last guided step.

    Nothing is read back from the device during the chain (each read would make the host wait
    for a GPU): a non-finite gradient is remembered and raised as :class:`NonFiniteError` at
    the chain's last step, before that step's update (by the caller after each replay when the
    chain is a CUDA graph: :meth:`raise_if_nonfinite`), and the diagnostics stay tensors until
    read.
    """

    model: DiffusionWorldModel
    objective: Objective
    scale: float = 4.0
    mode: Literal["sigma4", "normalized", "total"] = "sigma4"
    max_step: int | None = None
    guide_last: bool = False
    steered_fraction: float = 1.0
    _grad_rms: torch.Tensor | None = field(default=None, init=False, repr=False)
    _objective: torch.Tensor | None = field(default=None, init=False, repr=False)
    _nonfinite: torch.Tensor | None = field(default=None, init=False, repr=False)
    chain_tensors: ClassVar[tuple[str, ...]] = ("_grad_rms", "_objective", "_nonfinite")
    """The attributes a chain binds to its tensors (a CUDA graph binds them again after each
    replay: :class:`agdrl.cuda_graph.CapturedChain`)."""

    def __post_init__(self):
        if self.mode not in ("sigma4", "normalized", "total"):
            raise ValueError(f"unknown guidance scale mode {self.mode!r}; choose 'sigma4', "
                             "'normalized' or 'total'")
        if not 0.0 < self.steered_fraction <= 1.0:
            raise ValueError(f"steered_fraction must be in (0, 1], got {self.steered_fraction}")

    def steered_rows(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(batch,) bool: the rows this hook moves, the first ⌊steered_fraction · batch⌋ (so
        below 1 at least one row is unguided)."""
        return torch.arange(batch, device=device) < math.floor(self.steered_fraction * batch)

    def raise_if_nonfinite(self) -> None:
        """Raise :class:`NonFiniteError` if a gradient of the last chain was not finite (a
        chain captured in a CUDA graph cannot read this back itself: its replays call this)."""
        if self._nonfinite is not None and bool(self._nonfinite):
            raise NonFiniteError("the state-guidance gradient")

    @property
    def last_grad_rms(self) -> float:
        return 0.0 if self._grad_rms is None else float(self._grad_rms)

    @property
    def last_objective(self) -> float:
        return 0.0 if self._objective is None else float(self._objective)

    def __call__(self, state: StepState) -> None:
        if state.index == 0:
            self._nonfinite = None
        if state.k_prev < 0:
            if not capturing(state.x0):
                self.raise_if_nonfinite()
            return
        if self.max_step is not None and state.k > self.max_step:
            return
        grad, value = self._guide(state)
        bad = ~torch.isfinite(grad).all()
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        self._objective = value.detach().mean()

    def _guide(self, state: StepState) -> tuple[torch.Tensor, torch.Tensor]:
        """Move the step's predicted states; returns (∇J, J (B,))."""
        grad, value = state_gradient(self.objective, self.model, state.x0, state.cond,
                                     self.guide_last)
        x0 = state.x0.clone()
        x0[..., : self.model.obs_dim] += self._step(state, grad)
        state.x0 = x0
        return grad, value

    def _step(self, state: StepState, grad: torch.Tensor) -> torch.Tensor:
        """The shift c · w_k · ∇J of the module docstring for a gradient (B, H, D), each
        segment's normalized by its own RMS (zero on the rows outside :meth:`steered_rows`);
        records the batch's mean RMS."""
        rms = grad.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
        self._grad_rms = rms.mean()
        if self.mode == "sigma4":
            shift = self.scale * state.sigma**4 * grad
        else:
            weight = (state.sigma if self.mode == "normalized"
                      else state.alpha_bar_prev - state.alpha_bar)
            shift = self.scale * weight * grad / rms.clamp(min=1e-12)
        if self.steered_fraction < 1.0:
            shift = shift * self.steered_rows(len(grad), grad.device)[:, None, None]
        return shift


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
    chain_tensors: ClassVar[tuple[str, ...]] = ("_noise", "_u", "_spread")
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
class ActionGuidance(StateGuidance):
    """Advantage guidance through the actions: a denoising hook, run after 'sample' policy
    guidance, that moves the policy's noise ε up ∇_ε J instead of moving the states.

    In the PolyGRAD layout the denoiser predicts the states from the actions at every step, so
    a state edit is overwritten at the next call; an action edit is what the next call
    predicts from. At each denoising step but the last, the states are predicted again from
    x_k under the step's actions a = squash(u), u = μ(ŝ) + σ(ŝ) ε, and J of that prediction is
    differentiated through the denoiser (μ and σ held); ε moves by the same c · w_k as state
    guidance (normalized per segment), u with it, so the next call predicts the states of the
    steered actions. The actions stay π's samples at the predicted states for the moved ε, so
    this samples from π with its noise tilted toward higher J: for EAG, a step toward
    π(a | s) exp(c A(s, a)), the advantage-weighted policy. ``guide_last`` has no effect here
    (J scores the whole segment). ``denoiser``: the network the chain samples with.
    """

    policy: PolicyGuidance | None = None
    denoiser: nn.Module | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.policy is None or self.policy.mode != "sample" or self.denoiser is None:
            raise ValueError("action guidance moves the noise of 'sample' policy guidance: "
                             "it needs that hook and the sampling denoiser")

    def _guide(self, state: StepState) -> tuple[torch.Tensor, torch.Tensor]:
        """Move the policy's noise and the step's actions; returns (∇_u J, J (B,))."""
        policy, model = self.policy, self.model
        with torch.no_grad():
            std = policy.actor(model.decode(state.x0, state.cond).states)[1]
        pinned = torch.zeros_like(state.x0, dtype=torch.bool)
        pinned[:, 0, : model.obs_dim] = True  # s_0 stays the start state
        k = torch.full((state.x_k.shape[0],), state.k, device=state.x_k.device,
                       dtype=torch.long)
        with torch.enable_grad():
            u = policy._u.detach().requires_grad_(True)
            cond = model.action_norm.normalize(policy.actor.squash(u))
            x0 = model.diffusion.predict_x0(state.x_k, cond, k, self.denoiser)
            value = self.objective(model.decode(torch.where(pinned, state.x0, x0), cond))
            (grad,) = torch.autograd.grad(value.sum(), u)
        shift = self._step(state, grad * std)  # ∇_ε J = σ ∇_u J
        policy._noise = policy._noise + shift
        policy._u = u.detach() + std * shift
        state.cond = model.action_norm.normalize(policy.actor.squash(policy._u))
        return grad, value


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


@dataclass
class PinnedActions:
    """A denoising hook that holds the first A rows' actions at ``actions``: (A, H, da) in the
    world model's normalized action space (the rows' trajectories are the model's prediction
    of what those actions do)."""

    actions: torch.Tensor

    def __call__(self, state: StepState) -> None:
        rows = self.actions.shape[0]
        state.cond = torch.cat([self.actions, state.cond[rows:]])


def compose(*hooks: DenoisingHook | None) -> DenoisingHook:
    """One hook that calls ``hooks`` in order (by default policy guidance first, then state
    guidance, so the states are guided given the updated actions)."""
    active = [h for h in hooks if h is not None]

    def run(state: StepState) -> None:
        for hook in active:
            hook(state)

    return run
