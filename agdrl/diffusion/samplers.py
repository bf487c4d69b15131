"""Reverse-process samplers with a per-step hook for guidance.

Each step k -> k_prev: predict x̂_0, pin known entries, let the hook edit x̂_0 and the
conditioning, recompute the step from the (edited) x̂_0, clip the change near the end of the
chain (after guidance, so it is never lost), add noise. Samplers differ only in how the step
is computed from x̂_0:
- ``ddpm``: ancestral, the exact posterior q(x_{k_prev} | x_k, x̂_0) (any stride);
- ``ddim``: DDIM's update, deterministic (η = 0) or partially stochastic;
- ``heun``: second-order Heun (EDM's predictor-corrector): a DDIM step, x̂_0 evaluated again
  at its end, and the step redone with x̂_0 taken linear between the two (two network calls
  per step, one at the last); deterministic;
- ``dpm2m``: DPM-Solver++(2M), second order from the previous step's x̂_0 (one network call
  per step); deterministic.
The two second-order samplers integrate the probability-flow ODE in its exponential-integrator
form (:func:`~agdrl.diffusion.schedules.exponential_integrator_coefficients`) and take a
first-order step to the clean sample. Guidance edits x̂_0 once per step; Heun's second
evaluation keeps that edit (the guidance shift is held over the step instead of paying a
second guidance gradient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, get_args

import torch
from torch import nn

from agdrl.config import SamplerKind, TimestepSpacing
from agdrl.diffusion.process import GaussianDiffusion, Inpainting
from agdrl.diffusion.schedules import strided_timesteps
from agdrl.rng import randn

SAMPLER_KINDS: tuple[str, ...] = get_args(SamplerKind)


@dataclass
class StepState:
    """What a guidance hook sees at one denoising step (tensors are (B, H, Dx) unless noted).

    x_k: current noisy sample (read-only: do not modify in place);
    x0: predicted clean sample, s_0 already pinned (reassign or edit it to guide states);
    cond: conditioning (B, H, Dc) or None (reassign to guide actions);
    k, k_prev: step indices (k_prev = -1 at the last step); index: position in the chain
    (0 = first, noisiest); remaining: steps left including this one;
    sigma: std of the exact DDPM posterior q(x_{k_prev} | x_k, x_0) for this jump, the noise
    scale that guidance formulas use, whatever the sampler;
    noise_std: the noise the sampler will actually add (0 for deterministic DDIM);
    sigma, noise_std, alpha_bar, alpha_bar_prev: Python floats (no device work per step);
    generator: the sampling generator (for noise).
    The sampler detaches whatever the hook leaves in x0 and cond.
    """

    x_k: torch.Tensor
    x0: torch.Tensor
    cond: torch.Tensor | None
    k: int
    k_prev: int
    index: int
    remaining: int
    sigma: float
    noise_std: float
    alpha_bar: float
    alpha_bar_prev: float
    generator: torch.Generator | None


class DenoisingHook(Protocol):
    """Called once per denoising step; edits ``state.x0`` and/or ``state.cond`` by
    reassignment. Guidance schemes implement this."""

    def __call__(self, state: StepState) -> None: ...


def compose(*hooks: DenoisingHook | None) -> DenoisingHook:
    """One hook that calls ``hooks`` in order (by default policy guidance first, then state
    guidance, so the states are guided given the updated actions)."""
    active = [h for h in hooks if h is not None]

    def run(state: StepState) -> None:
        for hook in active:
            hook(state)

    return run


@dataclass(frozen=True)
class Sampler:
    """A reverse-process sampler.

    kind: 'ddpm', 'ddim', 'heun' or 'dpm2m' (see the module docstring).
    steps: number of denoising steps (≤ K), evenly spaced over the K training steps.
    spacing: 'linspace' (K-1 down to 0) or 'trailing' (K-1 down to K/steps - 1); see
    :func:`agdrl.diffusion.schedules.strided_timesteps`.
    timesteps: the decreasing training indices to visit instead (e.g. a distilled student's
    grid); ``steps`` is then not used.
    eta: DDIM stochasticity (0 deterministic, 1 ≈ ancestral); used by DDIM only.
    clip_max_step / clip_value: clip |mean − x_k| ≤ clip_value at steps whose training index
    k ≤ clip_max_step (the end of the chain; −1 = never). Counting in training indices keeps
    the clip's meaning when a few-step sampler strides over the chain.
    settle_steps: after the chain, this many more network calls at the clean index 0, each
    on the last result and followed by the hook as at the last step (``k_prev`` = −1, no
    noise, no clip): the states are predicted again under the conditioning the hook last
    edited, so that conditioning that depends on the states (policy guidance's actions) and
    the states settle on each other. 0: none.
    """

    kind: SamplerKind = "ddpm"
    steps: int = 128
    eta: float = 0.0
    clip_max_step: int = 10
    clip_value: float = 0.25
    timesteps: tuple[int, ...] | None = None
    spacing: TimestepSpacing = "linspace"
    settle_steps: int = 0

    def __post_init__(self):
        if self.kind not in SAMPLER_KINDS:
            raise ValueError(f"unknown sampler {self.kind!r}; choose one of "
                             f"{', '.join(SAMPLER_KINDS)}")
        if self.spacing not in get_args(TimestepSpacing):
            raise ValueError(f"unknown timestep spacing {self.spacing!r}; choose one of "
                             f"{', '.join(get_args(TimestepSpacing))}")
        if self.steps <= 0:
            raise ValueError(f"sampler steps must be positive, got {self.steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"DDIM eta must be in [0, 1], got {self.eta}")
        if self.clip_value <= 0:
            raise ValueError(f"clip_value must be positive, got {self.clip_value}")
        if self.settle_steps < 0:
            raise ValueError(f"settle_steps must be ≥ 0, got {self.settle_steps}")
        if self.timesteps is not None and (
                not self.timesteps or min(self.timesteps) < 0
                or any(a <= b for a, b in zip(self.timesteps, self.timesteps[1:], strict=False))):
            raise ValueError(f"timesteps must be non-negative and decreasing, got "
                             f"{self.timesteps}")

    @property
    def deterministic(self) -> bool:
        """Whether the chain adds no noise (then none is drawn)."""
        return self.kind in ("heun", "dpm2m") or (self.kind == "ddim" and self.eta == 0)

    def _mean(self, diffusion: GaussianDiffusion, x_k: torch.Tensor, x0: torch.Tensor,
              k: int, k_prev: int, c0: float, ct: float, noise_std: float) -> torch.Tensor:
        """Mean of the step k -> k_prev given x̂_0: the DDPM posterior mean c0 x̂_0 + ct x_k
        (coefficients from :meth:`GaussianDiffusion.step_coefficients`), or DDIM's."""
        if self.kind == "ddpm":
            return c0 * x0 + ct * x_k
        ab_prev = diffusion.alpha_bar_at(k_prev)
        eps = diffusion.eps_from_x0(x_k, x0, k)
        return math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - noise_std**2, 0.0)) * eps

    def _noise_std(self, posterior_std: float) -> float:
        """DDPM adds the posterior std, DDIM's sigma(eta) is eta times it; the ODE samplers
        add none."""
        if self.kind == "ddpm":
            return posterior_std
        return self.eta * posterior_std if self.kind == "ddim" else 0.0

    def grid(self, num_train_steps: int) -> list[int]:
        """The training indices the chain visits, noisiest first."""
        if self.timesteps is not None:
            if self.timesteps[0] >= num_train_steps:
                raise ValueError(f"timestep {self.timesteps[0]} is beyond the model's "
                                 f"{num_train_steps} training steps")
            return list(self.timesteps)
        return strided_timesteps(num_train_steps, min(self.steps, num_train_steps), self.spacing)

    def network_calls(self, num_train_steps: int) -> int:
        """Denoiser evaluations per sample from a K-step model: one per step, plus Heun's
        second evaluation at all but the last, plus the settle steps."""
        steps = len(self.grid(num_train_steps))
        return (2 * steps - 1 if self.kind == "heun" else steps) + self.settle_steps

    @torch.no_grad()
    def sample(self, diffusion: GaussianDiffusion, shape: tuple[int, int, int],
               cond: torch.Tensor | None = None, inpainting: Inpainting | None = None,
               hook: DenoisingHook | None = None, denoiser: nn.Module | None = None,
               generator: torch.Generator | None = None, device: torch.device | str = "cpu",
               settle_denoiser: nn.Module | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Draw samples x: (B, H, Dx); returns ``(x, cond)`` (cond as edited by the hook).

        ``denoiser`` overrides the process's network (e.g. the EMA copy); ``settle_denoiser``
        the one the settle steps call (default: ``denoiser``; a distilled student knows only
        its grid's indices, not 0). Guidance hooks may enable gradients inside themselves; the
        chain itself runs without autograd.
        """
        x = randn(shape, generator, device)
        if inpainting is not None:
            x = inpainting.apply(x)
        ks = self.grid(diffusion.num_steps)
        x, cond = self.denoise(diffusion, x, ks, -1, cond, inpainting, hook, denoiser, generator)
        settle_denoiser = denoiser if settle_denoiser is None else settle_denoiser
        clean = torch.zeros(x.shape[0], device=x.device, dtype=torch.long)
        for i in range(self.settle_steps):
            x = diffusion.predict_x0(x, cond, clean, settle_denoiser)
            if inpainting is not None:
                x = inpainting.apply(x)
            if hook is not None:
                x, cond = _guided(hook, diffusion, x, x, cond, 0, -1, len(ks) + i, 0, 0.0, 0.0,
                                  inpainting, generator)
        return x, cond

    @torch.no_grad()
    def denoise(self, diffusion: GaussianDiffusion, x: torch.Tensor, ks: list[int],
                k_end: int = -1, cond: torch.Tensor | None = None,
                inpainting: Inpainting | None = None, hook: DenoisingHook | None = None,
                denoiser: nn.Module | None = None, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the chain from x = x_{ks[0]}: (B, H, Dx) through the decreasing indices ``ks``
        down to ``k_end`` (−1: clean data; ``self.steps`` is not used). Returns ``(x, cond)``.
        A part of a chain (distillation targets) or a whole one (:meth:`sample`)."""
        ks_prev = [*ks[1:], k_end]
        n = len(ks)
        x0_last, h_last = None, None  # DPM-Solver++(2M)'s history
        for i, (k, k_prev) in enumerate(zip(ks, ks_prev, strict=True)):
            k_batch = torch.full((x.shape[0],), k, device=x.device, dtype=torch.long)
            x0 = diffusion.predict_x0(x, cond, k_batch, denoiser)
            if inpainting is not None:
                x0 = inpainting.apply(x0)
            x0_net = x0
            c0, ct, posterior_std = diffusion.step_coefficients(k, k_prev)
            noise_std = self._noise_std(posterior_std)
            if hook is not None:
                x0, cond = _guided(hook, diffusion, x, x0, cond, k, k_prev, i, n - i,
                                   posterior_std, noise_std, inpainting, generator)
            if self.kind in ("ddpm", "ddim") or k_prev < 0:
                mean = self._mean(diffusion, x, x0, k, k_prev, c0, ct, noise_std)
            else:
                cx, ca, cl, h = diffusion.integrator_coefficients(k, k_prev)
                if self.kind == "heun":
                    euler = cx * x + ca * x0
                    if inpainting is not None:
                        euler = inpainting.apply(euler)
                    k_next = torch.full_like(k_batch, k_prev)
                    x0_end = diffusion.predict_x0(euler, cond, k_next, denoiser) + (x0 - x0_net)
                    if inpainting is not None:
                        x0_end = inpainting.apply(x0_end)
                    mean = euler + cl * (x0_end - x0)
                else:  # DPM-Solver++(2M): x̂_0 extrapolated from the previous step's
                    data = x0 if x0_last is None else x0 + (x0 - x0_last) * (h / (2 * h_last))
                    mean = cx * x + ca * data
                    x0_last, h_last = x0, h
            if k <= self.clip_max_step:  # after guidance, so the clip is never undone
                mean = x + (mean - x).clamp(-self.clip_value, self.clip_value)
            x = (mean + noise_std * randn(x.shape, generator, x.device)
                 if k_prev >= 0 and not self.deterministic else mean)
            if inpainting is not None:
                x = inpainting.apply(x)
        return x, cond


def _guided(hook: DenoisingHook, diffusion: GaussianDiffusion, x_k: torch.Tensor,
            x0: torch.Tensor, cond: torch.Tensor | None, k: int, k_prev: int, index: int,
            remaining: int, sigma: float, noise_std: float, inpainting: Inpainting | None,
            generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Call ``hook`` on one step's :class:`StepState`; its x̂_0 (pinned again) and
    conditioning, detached."""
    state = StepState(x_k=x_k, x0=x0, cond=cond, k=k, k_prev=k_prev, index=index,
                      remaining=remaining, sigma=sigma, noise_std=noise_std,
                      alpha_bar=diffusion.alpha_bar_at(k),
                      alpha_bar_prev=diffusion.alpha_bar_at(k_prev), generator=generator)
    hook(state)
    x0 = state.x0.detach()
    if inpainting is not None:
        x0 = inpainting.apply(x0)
    return x0, None if state.cond is None else state.cond.detach()
