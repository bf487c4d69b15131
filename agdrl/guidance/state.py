"""State guidance: a denoising hook that moves the predicted states up the gradient of an
objective J (:mod:`agdrl.guidance.objectives`).

At a denoising step with posterior std σ_k, the predicted clean states ŝ (normalized, inside
x̂_0) are moved up the gradient of J evaluated in the environment's own units:

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
guided. Unnormalization is differentiable, so the critic is evaluated on states in the units
it was trained on (DESIGN §2.6, defect 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from agdrl.cuda_graph import capturing
from agdrl.diffusion.samplers import StepState
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.faults import NonFiniteError
from agdrl.guidance.objectives import Objective


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
    that the hook moves (:meth:`steered_rows`); the others are sampled unguided, and the
    gradient is computed on the steered rows alone (every row's J depends on that row only).
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

    def steered_count(self, batch: int) -> int:
        """How many rows of a batch this hook moves: ⌊steered_fraction · batch⌋ (so below 1 at
        least one row is unguided)."""
        return math.floor(self.steered_fraction * batch)

    def steered_rows(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(batch,) bool: the rows this hook moves, the first :meth:`steered_count`."""
        return torch.arange(batch, device=device) < self.steered_count(batch)

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
        rows = self.steered_count(state.x0.shape[0])
        if rows == 0 or (self.max_step is not None and state.k > self.max_step):
            return
        grad, value = self._guide(state, rows)
        bad = ~torch.isfinite(grad).all()
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        self._objective = value.detach().mean()

    def _guide(self, state: StepState, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Move the predicted states of the batch's first ``rows`` rows; returns their
        (∇J (rows, H, ds), J (rows,))."""
        cond = None if state.cond is None else state.cond[:rows]
        grad, value = state_gradient(self.objective, self.model, state.x0[:rows], cond,
                                     self.guide_last)
        x0 = state.x0.clone()
        x0[:rows, :, : self.model.obs_dim] += self._step(state, grad)
        state.x0 = x0
        return grad, value

    def _step(self, state: StepState, grad: torch.Tensor) -> torch.Tensor:
        """The shift c · w_k · ∇J of the module docstring for a gradient (B, H, D), each
        segment's normalized by its own RMS; records the mean RMS over the segments."""
        rms = grad.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
        self._grad_rms = rms.mean()
        if self.mode == "sigma4":
            shift = self.scale * state.sigma**4 * grad
        else:
            weight = (state.sigma if self.mode == "normalized"
                      else state.alpha_bar_prev - state.alpha_bar)
            shift = self.scale * weight * grad / rms.clamp(min=1e-12)
        return shift
