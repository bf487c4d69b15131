"""The Gaussian diffusion process over segments: forward noising, x̂_0 / ε parameterization,
the training objective, and the reverse-step posterior.

Shapes: x: (B, H, Dx); cond: (B, H, Dc) or None; k: (B,) integer step indices in [0, K);
label: (B,) scalar segment labels (NaN: none) or None, for label-conditioned denoisers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from agdrl.config import Prediction, Schedule
from agdrl.diffusion.schedules import (
    exponential_integrator_coefficients,
    make_alpha_bar,
    posterior_coefficients,
)
from agdrl.rng import randint, randn


class Inpainting:
    """Known entries of the clean segment, re-imposed on x̂_0 and on x_k after every step.

    mask: (B, H, Dx) bool, values: (B, H, Dx). Used to pin ``s_0`` to a real state.
    """

    def __init__(self, mask: torch.Tensor, values: torch.Tensor):
        if mask.shape != values.shape:
            raise ValueError(f"inpainting mask {tuple(mask.shape)} and values "
                             f"{tuple(values.shape)} differ in shape")
        self.mask = mask
        self.values = values

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, self.values, x)


class GaussianDiffusion(nn.Module):
    """DDPM forward process with a denoiser that predicts x̂_0 (reference) or ε."""

    def __init__(self, denoiser: nn.Module, num_steps: int, schedule: Schedule = "cosine",
                 tau: float = 1.0, prediction: Prediction = "x0", x0_bound: float = 0.0):
        super().__init__()
        if prediction not in ("x0", "eps"):
            raise ValueError(f"prediction must be 'x0' or 'eps', got {prediction!r}")
        if x0_bound < 0:
            raise ValueError(f"x0_bound must be non-negative, got {x0_bound}")
        self.denoiser = denoiser
        self.num_steps = num_steps
        self.prediction = prediction
        self.x0_bound = x0_bound
        alpha_bar = make_alpha_bar(schedule, num_steps, tau)
        # float64, with alpha_bar at index -1 (clean data, = 1) at position 0: posterior
        # coefficients 1 - ab_k / ab_prev cancel badly in float32 for small steps.
        self.register_buffer("alpha_bar_ext", torch.cat([torch.ones(1, dtype=torch.float64),
                                                         alpha_bar]))
        # the same on the host, never moved: a sampler's per-step constants are Python floats
        # computed from it once per (k, k_prev), so a step launches no scalar kernels
        self._alpha_bar_host: list[float] = self.alpha_bar_ext.tolist()
        self._step_constants: dict[tuple[str, int, int], tuple[float, ...]] = {}

    def alpha_bar_at(self, k: torch.Tensor | int) -> torch.Tensor | float:
        """alpha_bar at step index k, with k = -1 meaning clean data (alpha_bar = 1): float32
        on the buffer's device for a tensor k, a Python float (float64) for a plain index."""
        if isinstance(k, int):
            return self._alpha_bar_host[k + 1]
        index = torch.as_tensor(k, device=self.alpha_bar_ext.device) + 1
        return self.alpha_bar_ext[index].float()

    def q_sample(self, x0: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample x_k ~ q(x_k | x_0) = N(sqrt(ab_k) x_0, (1 - ab_k) I)."""
        ab = self.alpha_bar_at(k).view(-1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def predict_x0(self, x_k: torch.Tensor, cond: torch.Tensor | None, k: torch.Tensor,
                   denoiser: nn.Module | None = None) -> torch.Tensor:
        """x̂_0 from the denoiser output (converted from ε when the model predicts noise),
        clamped to ±x0_bound when that is set: at the noisiest steps the ε-to-x̂_0 conversion
        divides by sqrt(ab_k) ≈ 0 and amplifies any error."""
        out = (self.denoiser if denoiser is None else denoiser)(x_k, cond, k.float())
        if self.prediction == "eps":
            ab = self.alpha_bar_at(k).view(-1, 1, 1)
            out = (x_k - (1 - ab).sqrt() * out) / ab.sqrt()
        return out.clamp(-self.x0_bound, self.x0_bound) if self.x0_bound > 0 else out

    def eps_from_x0(self, x_k: torch.Tensor, x0: torch.Tensor, k: int) -> torch.Tensor:
        """The noise implied by x_k and x̂_0 at step k."""
        ab = self.alpha_bar_at(k)
        return (x_k - math.sqrt(ab) * x0) / math.sqrt(max(1 - ab, 1e-12))

    def _constants(self, kind: str, k: int, k_prev: int,
                   make: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]
                   ) -> tuple[float, ...]:
        """``make(ab_k, ab_prev)``'s float64 tensors as Python floats, computed once."""
        key = (kind, k, k_prev)
        if key not in self._step_constants:
            ab_k, ab_prev = (torch.tensor(self._alpha_bar_host[i + 1], dtype=torch.float64)
                             for i in (k, k_prev))
            self._step_constants[key] = tuple(float(c) for c in make(ab_k, ab_prev))
        return self._step_constants[key]

    def step_coefficients(self, k: int, k_prev: int) -> tuple[float, float, float]:
        """(c0, ct, std) of q(x_{k_prev} | x_k, x_0) = N(c0 x_0 + ct x_k, std²) for a jump
        k -> k_prev (k_prev = -1: clean), computed in float64 (once per jump)."""
        c0, ct, var = self._constants("posterior", k, k_prev, posterior_coefficients)
        return c0, ct, math.sqrt(max(var, 0.0))

    def integrator_coefficients(self, k: int, k_prev: int
                                ) -> tuple[float, float, float, float]:
        """(cx, ca, cl, h) of an exponential-integrator ODE step k -> k_prev ≥ 0 (see
        :func:`exponential_integrator_coefficients`), computed in float64 (once per jump)."""
        if k_prev < 0:
            raise ValueError("the exponential-integrator step needs a noisy target (k_prev ≥ 0)")
        return self._constants("integrator", k, k_prev, exponential_integrator_coefficients)

    def posterior(self, x_k: torch.Tensor, x0: torch.Tensor, k: int, k_prev: int
                  ) -> tuple[torch.Tensor, float]:
        """Mean and std of q(x_{k_prev} | x_k, x_0) for a jump k -> k_prev (k_prev = -1: clean)."""
        c0, ct, std = self.step_coefficients(k, k_prev)
        return c0 * x0 + ct * x_k, std

    def loss(self, x0: torch.Tensor, cond: torch.Tensor | None, weight: torch.Tensor,
             inpainting: Inpainting | None = None, generator: torch.Generator | None = None,
             label: torch.Tensor | None = None, denoiser: nn.Module | None = None
             ) -> torch.Tensor:
        """Mean squared error of the denoiser's target under ``weight`` (B, H, Dx) in [0, 1].

        Known (inpainted) entries are set clean in x_k, as at sampling time, and should carry
        zero weight. The target is x_0 or ε according to ``prediction``. ``denoiser``
        overrides the network (e.g. its data-parallel wrapper).
        """
        b = x0.shape[0]
        k = randint(self.num_steps, (b,), generator, x0.device)
        noise = randn(x0.shape, generator, x0.device)
        x_k = self.q_sample(x0, k, noise)
        if inpainting is not None:
            x_k = inpainting.apply(x_k)
        out = (self.denoiser if denoiser is None else denoiser)(x_k, cond, k.float(), label)
        target = x0 if self.prediction == "x0" else noise
        return ((out - target) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)
