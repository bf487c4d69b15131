"""Reverse-process samplers with a per-step hook for guidance.

Each step k -> k_prev: predict x̂_0, pin known entries, let the hook edit x̂_0 and the
conditioning, recompute the step's mean from the (edited) x̂_0, clip the change near the end
of the chain (after guidance, so it is never lost), add noise. Samplers differ only in the
mean and noise of the step: ancestral DDPM uses the exact posterior (any stride), DDIM its
deterministic update (η = 0) or a partially stochastic one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from agdrl.diffusion.process import GaussianDiffusion, Inpainting
from agdrl.diffusion.schedules import strided_timesteps


@dataclass
class StepState:
    """What a guidance hook sees at one denoising step (tensors are (B, H, Dx) unless noted).

    x_k: current noisy sample; x0: predicted clean sample (edit it to guide);
    cond: conditioning (B, H, Dc) or None (edit it to guide actions);
    k, k_prev: step indices (k_prev = -1 at the last step); index: position in the chain
    (0 = first, noisiest); remaining: steps left including this one;
    sigma: the step's noise std (0-d tensor); alpha_bar, alpha_bar_prev: 0-d tensors.
    """

    x_k: torch.Tensor
    x0: torch.Tensor
    cond: torch.Tensor | None
    k: int
    k_prev: int
    index: int
    remaining: int
    sigma: torch.Tensor
    alpha_bar: torch.Tensor
    alpha_bar_prev: torch.Tensor


class DenoisingHook(Protocol):
    """Called once per denoising step; edits ``state.x0`` and/or ``state.cond`` in place or by
    reassignment. Guidance schemes implement this."""

    def __call__(self, state: StepState) -> None: ...


@dataclass(frozen=True)
class Sampler:
    """A reverse-process sampler.

    kind: 'ddpm' (ancestral, exact strided posterior) or 'ddim'.
    steps: number of denoising steps (≤ K); evenly strided over the K training steps.
    eta: DDIM stochasticity (0 deterministic, 1 ≈ ancestral); ignored by DDPM.
    clip_final_steps / clip_value: clip |mean − x_k| ≤ clip_value at steps whose training index
    k < clip_final_steps (the end of the chain; 0 = off). Counting in training indices keeps
    the clip's meaning when a few-step sampler strides over the chain.
    """

    kind: str = "ddpm"
    steps: int = 128
    eta: float = 0.0
    clip_final_steps: int = 10
    clip_value: float = 0.25

    def __post_init__(self):
        if self.kind not in ("ddpm", "ddim"):
            raise ValueError(f"unknown sampler {self.kind!r}; choose 'ddpm' or 'ddim'")
        if self.steps <= 0:
            raise ValueError(f"sampler steps must be positive, got {self.steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"DDIM eta must be in [0, 1], got {self.eta}")

    def _mean_std(self, diffusion: GaussianDiffusion, x_k: torch.Tensor, x0: torch.Tensor,
                  k: int, k_prev: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "ddpm":
            return diffusion.posterior(x_k, x0, k, k_prev)
        ab, ab_prev = diffusion.alpha_bar_at(k), diffusion.alpha_bar_at(k_prev)
        sigma = self.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
        eps = (x_k - ab.sqrt() * x0) / (1 - ab).sqrt()
        mean = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
        return mean, sigma

    @torch.no_grad()
    def sample(self, diffusion: GaussianDiffusion, shape: tuple[int, int, int],
               cond: torch.Tensor | None = None, inpainting: Inpainting | None = None,
               hook: DenoisingHook | None = None, denoiser: nn.Module | None = None,
               generator: torch.Generator | None = None, device: torch.device | str = "cpu"
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Draw samples x: (B, H, Dx); returns ``(x, cond)`` (cond as edited by the hook).

        ``denoiser`` overrides the process's network (e.g. the EMA copy). Guidance hooks may
        enable gradients inside themselves; the chain itself runs without autograd.
        """
        ks = strided_timesteps(diffusion.num_steps, min(self.steps, diffusion.num_steps))
        ks_prev = [*ks[1:], -1]
        x = torch.randn(shape, device=device, generator=generator)
        if inpainting is not None:
            x = inpainting.apply(x)
        n = len(ks)
        for i, (k, k_prev) in enumerate(zip(ks, ks_prev, strict=True)):
            k_batch = torch.full((shape[0],), k, device=x.device, dtype=torch.long)
            x0 = diffusion.predict_x0(x, cond, k_batch, denoiser)
            if inpainting is not None:
                x0 = inpainting.apply(x0)
            if hook is not None:
                _, sigma = self._mean_std(diffusion, x, x0, k, k_prev)
                state = StepState(x_k=x, x0=x0, cond=cond, k=k, k_prev=k_prev, index=i,
                                  remaining=n - i, sigma=sigma,
                                  alpha_bar=diffusion.alpha_bar_at(k),
                                  alpha_bar_prev=diffusion.alpha_bar_at(k_prev))
                hook(state)
                x0, cond = state.x0, state.cond
                if inpainting is not None:
                    x0 = inpainting.apply(x0)
            mean, std = self._mean_std(diffusion, x, x0, k, k_prev)
            if k < self.clip_final_steps:
                mean = x + (mean - x).clamp(-self.clip_value, self.clip_value)
            if k_prev >= 0:
                noise = torch.randn(x.shape, device=x.device, generator=generator)
                x = mean + std * noise
            else:
                x = mean
            if inpainting is not None:
                x = inpainting.apply(x)
        return x, cond
