"""Advantage guidance through the actions: the state-guidance step applied to the policy's
noise, so the imagined actions tilt toward the advantage-weighted policy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from agdrl.diffusion.samplers import StepState
from agdrl.guidance.policy import PolicyGuidance
from agdrl.guidance.state import StateGuidance


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

    def _guide(self, state: StepState, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Move the policy's noise and the actions of the batch's first ``rows`` rows; returns
        their (∇_u J (rows, H, da), J (rows,))."""
        policy, model = self.policy, self.model
        x_k, x0_pinned = state.x_k[:rows], state.x0[:rows]
        std = policy._std[:rows]  # σ(ŝ) at this step's predicted states, which ε scales
        pinned = torch.zeros_like(x0_pinned, dtype=torch.bool)
        pinned[:, 0, : model.obs_dim] = True  # s_0 stays the start state
        k = torch.full((rows,), state.k, device=x_k.device, dtype=torch.long)
        with torch.enable_grad():
            u = policy._u[:rows].detach().requires_grad_(True)
            cond = model.action_norm.normalize(policy.actor.squash(u))
            x0 = model.diffusion.predict_x0(x_k, cond, k, self.denoiser)
            value = self.objective(model.decode(torch.where(pinned, x0_pinned, x0), cond))
            (grad,) = torch.autograd.grad(value.sum(), u)
        shift = self._step(state, grad * std)  # ∇_ε J = σ ∇_u J
        policy._noise = torch.cat([policy._noise[:rows] + shift, policy._noise[rows:]])
        policy._u = torch.cat([u.detach() + std * shift, policy._u[rows:]])
        state.cond = model.action_norm.normalize(policy.actor.squash(policy._u))
        return grad, value
