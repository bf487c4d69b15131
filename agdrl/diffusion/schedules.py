"""Noise schedules and the closed-form quantities of the Gaussian forward process.

Notation (DDPM): ``beta_k`` per-step variance, ``alpha_k = 1 - beta_k``,
``alpha_bar_k = prod_{j<=k} alpha_j``. Index k runs 0 … K-1, with k = K-1 the noisiest step.
"""

from __future__ import annotations

import math

import torch


def cosine_alpha_bar(num_steps: int, tau: float = 1.0) -> torch.Tensor:
    """``alpha_bar(u) = cos(pi u / 2)^(2 tau)`` at ``u = (k + 1) / K``, k = 0 … K-1 (float64).

    The exponent ``tau`` (Chen 2023, "On the importance of noise scheduling") moves the schedule:
    tau < 1 keeps more signal for longer (the reference uses 0.1 for Hopper), tau = 1 is the
    plain cosine schedule. Per-step betas are capped at 0.999 as usual.
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    if tau <= 0:
        raise ValueError(f"schedule exponent tau must be positive, got {tau}")
    u = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)
    curve = torch.cos(u * math.pi / 2).clamp(min=0.0) ** (2 * tau)
    betas = (1 - curve[1:] / curve[:-1]).clamp(0.0, 0.999)
    return torch.cumprod(1 - betas, 0)


def linear_alpha_bar(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02
                     ) -> torch.Tensor:
    """DDPM's linear betas, rescaled so that any K spans the same total noise as K = 1000."""
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    scale = 1000 / num_steps
    betas = torch.linspace(scale * beta_start, min(scale * beta_end, 0.999), num_steps,
                           dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def make_alpha_bar(name: str, num_steps: int, tau: float = 1.0) -> torch.Tensor:
    """alpha_bar_k, k = 0 … K-1 (float64), of the schedule called ``name``."""
    if name == "cosine":
        return cosine_alpha_bar(num_steps, tau)
    if name == "linear":
        return linear_alpha_bar(num_steps)
    raise ValueError(f"unknown noise schedule {name!r}; choose 'cosine' or 'linear'")


def posterior_coefficients(alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coefficients of q(x_prev | x_t, x_0) = N(c0 x_0 + ct x_t, var) for a (possibly strided) step.

    For a jump from index t to an earlier index ``prev`` the effective
    ``beta = 1 - alpha_bar_t / alpha_bar_prev`` (so strided "respaced" DDPM is exact).
    Returns ``(c0, ct, var)``, each shaped like the inputs.
    """
    beta = 1 - alpha_bar_t / alpha_bar_prev
    c0 = beta * alpha_bar_prev.sqrt() / (1 - alpha_bar_t)
    ct = (1 - beta).sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
    var = beta * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
    return c0, ct, var


def exponential_integrator_coefficients(alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor
                                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                   torch.Tensor]:
    """Coefficients of one step t -> prev of the probability-flow ODE in its exponential-
    integrator form with data (x̂_0) prediction (DPM-Solver++, Lu et al. 2022).

    With α = sqrt(ab), σ = sqrt(1 - ab) and log-SNR λ = log(α / σ), h = λ_prev - λ_t > 0, the
    exact solution is x_prev = (σ_prev / σ_t) x_t + σ_prev ∫ e^λ x̂_0(λ) dλ. Integrating e^λ
    exactly against x̂_0 taken linear in λ between the step's ends (x̂_0 = a at t, b at prev):

        x_prev = cx · x_t + ca · a + cl · (b - a),
        cx = σ_prev / σ_t,  ca = α_prev (1 - e^{-h}),  cl = α_prev (h - 1 + e^{-h}) / h.

    cl = 0 gives the first-order step, which is exactly DDIM (η = 0). Because the linear part
    is integrated exactly, the coefficients stay bounded however large h is (the first step out
    of nearly pure noise). Returns ``(cx, ca, cl, h)``; prev must be noisy (ab_prev < 1).
    """
    a_t, a_p = alpha_bar_t.sqrt(), alpha_bar_prev.sqrt()
    s_t, s_p = (1 - alpha_bar_t).sqrt(), (1 - alpha_bar_prev).sqrt()
    decay = a_t * s_p / (s_t * a_p)  # e^{-h}
    h = -torch.log(decay)
    return s_p / s_t, a_p * (1 - decay), a_p * (h - 1 + decay) / h, h


def strided_timesteps(num_train_steps: int, num_sample_steps: int,
                      spacing: str = "linspace") -> list[int]:
    """``num_sample_steps`` training indices, noisiest (K-1) first, evenly spaced.

    'linspace' spans K-1 down to 0, so the last network call is made at the nearly clean
    index 0. 'trailing' (Lin et al., 2024, "Common diffusion noise schedules and sample steps
    are flawed") takes K-1, K-1-K/n, ... and stops K/n - 1 above 0: the last call predicts
    the clean segment from a still noisy one, so no call is spent where nothing is left to
    denoise. Both give every index when n = K.
    """
    if not 1 <= num_sample_steps <= num_train_steps:
        raise ValueError(f"sampling steps must be in [1, {num_train_steps}], "
                         f"got {num_sample_steps}")
    if spacing == "trailing":
        stride = num_train_steps / num_sample_steps
        return [num_train_steps - 1 - round(i * stride) for i in range(num_sample_steps)]
    if spacing != "linspace":
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose linspace or trailing")
    if num_sample_steps == 1:
        return [num_train_steps - 1]
    grid = torch.linspace(num_train_steps - 1, 0, num_sample_steps, dtype=torch.float64)
    steps = sorted({round(v) for v in grid.tolist()}, reverse=True)
    return steps
