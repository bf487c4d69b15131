"""Noise schedules and the Gaussian forward/reverse process against closed forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from agdrl.diffusion.process import GaussianDiffusion
from agdrl.diffusion.schedules import (
    cosine_alpha_bar,
    linear_alpha_bar,
    make_alpha_bar,
    posterior_coefficients,
    strided_timesteps,
)

BETA_CAP = 0.999  # the per-step cap documented in cosine_alpha_bar


class ZeroDenoiser(nn.Module):
    """Stands in for a network where only the process's arithmetic is under test."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None, k: torch.Tensor,
                label: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros_like(x)


class FixedOutputDenoiser(nn.Module):
    """Returns a stored tensor whatever its input (e.g. the true noise)."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None, k: torch.Tensor,
                label: torch.Tensor | None = None) -> torch.Tensor:
        return self.output


def closed_form_cosine(num_steps: int, tau: float) -> np.ndarray:
    u = (np.arange(num_steps) + 1) / num_steps
    return np.cos(np.pi * u / 2) ** (2 * tau)


# ---------------------------------------------------------------------- cosine schedule
@pytest.mark.parametrize("num_steps", [8, 32, 128, 1000])
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0, 2.0])
def test_cosine_matches_closed_form_where_beta_is_uncapped(num_steps: int, tau: float) -> None:
    ab = cosine_alpha_bar(num_steps, tau).numpy()
    expected = closed_form_cosine(num_steps, tau)
    # Per-step beta of the closed form; the product telescopes to the closed form only while
    # no beta has been capped.
    prev = np.concatenate([[1.0], expected[:-1]])
    uncapped = np.cumprod(1 - expected / prev < BETA_CAP).astype(bool)
    assert uncapped.sum() >= num_steps - 1  # only the last step (cos = 0) may be capped
    # float64 cumulative product of <= 1000 factors: relative round-off far below 1e-10.
    np.testing.assert_allclose(ab[uncapped], expected[uncapped], rtol=1e-10, atol=0)


@pytest.mark.parametrize("num_steps", [8, 128])
def test_cosine_last_step_is_capped_so_signal_never_vanishes(num_steps: int) -> None:
    ab = cosine_alpha_bar(num_steps)
    # cos(pi/2) = 0 would give beta = 1; the cap keeps a factor 1 - 0.999 of the signal.
    assert ab[-1].item() == pytest.approx(ab[-2].item() * (1 - BETA_CAP), rel=1e-12)


@pytest.mark.parametrize("num_steps", [1, 2, 16, 1000])
@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0])
def test_cosine_is_strictly_decreasing_in_unit_interval(num_steps: int, tau: float) -> None:
    ab = cosine_alpha_bar(num_steps, tau)
    assert ab.dtype == torch.float64
    assert ab.shape == (num_steps,)
    assert torch.all(ab > 0) and torch.all(ab <= 1)
    assert torch.all(ab[1:] < ab[:-1])


@pytest.mark.parametrize("num_steps", [16, 128])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_small_tau_keeps_more_signal_at_every_step(num_steps: int, tau: float) -> None:
    low_tau = cosine_alpha_bar(num_steps, tau)
    plain = cosine_alpha_bar(num_steps, 1.0)
    assert torch.all(low_tau > plain)


@pytest.mark.parametrize(("num_steps", "tau"), [(0, 1.0), (-3, 1.0), (10, 0.0), (10, -1.0)])
def test_cosine_rejects_bad_arguments(num_steps: int, tau: float) -> None:
    with pytest.raises(ValueError):
        cosine_alpha_bar(num_steps, tau)


def test_make_alpha_bar_dispatches_and_rejects_unknown_names() -> None:
    assert torch.equal(make_alpha_bar("cosine", 20, 0.3), cosine_alpha_bar(20, 0.3))
    assert torch.equal(make_alpha_bar("linear", 20), linear_alpha_bar(20))
    with pytest.raises(ValueError, match="sigmoid"):
        make_alpha_bar("sigmoid", 20)


# ---------------------------------------------------------------------- posterior
def test_posterior_single_step_matches_textbook_ddpm() -> None:
    ab = cosine_alpha_bar(128).numpy()
    for k in range(1, 128):
        beta = 1 - ab[k] / ab[k - 1]
        alpha = 1 - beta
        c0, ct, var = (v.item() for v in posterior_coefficients(torch.tensor(ab[k]),
                                                                   torch.tensor(ab[k - 1])))
        assert c0 == pytest.approx(beta * math.sqrt(ab[k - 1]) / (1 - ab[k]), rel=1e-12)
        assert ct == pytest.approx(math.sqrt(alpha) * (1 - ab[k - 1]) / (1 - ab[k]), rel=1e-12)
        assert var == pytest.approx(beta * (1 - ab[k - 1]) / (1 - ab[k]), rel=1e-12)


def bayes_posterior(ab_t: float, ab_prev: float, x0: float, xt: float) -> tuple[float, float]:
    """Mean and variance of q(x_prev | x_t, x_0) by completing the square (scalar Gaussians).

    Prior q(x_prev | x0) = N(sqrt(ab_prev) x0, 1 - ab_prev); likelihood
    q(x_t | x_prev) = N(sqrt(ab_t / ab_prev) x_prev, 1 - ab_t / ab_prev).
    """
    a = math.sqrt(ab_t / ab_prev)
    lik_var = 1 - ab_t / ab_prev
    prior_var = 1 - ab_prev
    precision = 1 / prior_var + a * a / lik_var
    var = 1 / precision
    mean = var * (math.sqrt(ab_prev) * x0 / prior_var + a * xt / lik_var)
    return mean, var


@pytest.mark.parametrize(("t", "prev"), [(1, 0), (50, 20), (99, 49), (127, 0), (127, 126),
                                         (64, 3)])
def test_posterior_matches_bayes_rule_for_strided_jumps(t: int, prev: int) -> None:
    ab = cosine_alpha_bar(128).numpy()
    c0, ct, var = (v.item() for v in posterior_coefficients(torch.tensor(ab[t]),
                                                           torch.tensor(ab[prev])))
    for x0, xt in [(1.0, 0.0), (0.0, 1.0), (-0.7, 2.3)]:
        mean_bayes, var_bayes = bayes_posterior(ab[t], ab[prev], x0, xt)
        assert c0 * x0 + ct * xt == pytest.approx(mean_bayes, rel=1e-9, abs=1e-12)
        assert var == pytest.approx(var_bayes, rel=1e-9)


def test_q_sample_marginal_mean_and_variance_monte_carlo() -> None:
    num_steps, n = 32, 200_000
    diffusion = GaussianDiffusion(ZeroDenoiser(), num_steps)
    gen = torch.Generator().manual_seed(0)
    x0_value = 1.5
    for k_value in (0, num_steps // 2, num_steps - 1):
        ab = diffusion.alpha_bar_at(k_value)
        x0 = torch.full((n, 1, 1), x0_value)
        noise = torch.randn(x0.shape, generator=gen)
        k = torch.full((n,), k_value, dtype=torch.long)
        xk = diffusion.q_sample(x0, k, noise).flatten().double()
        var = 1 - ab
        # 5 standard errors: the mean's is sqrt(var / n), the variance's sqrt(2 / n) var.
        assert xk.mean().item() == pytest.approx(math.sqrt(ab) * x0_value,
                                                 abs=5 * math.sqrt(var / n))
        assert xk.var().item() == pytest.approx(var, abs=5 * var * math.sqrt(2 / n))


@pytest.mark.parametrize("k", [0, 5, 31])
def test_posterior_to_clean_data_returns_x0_without_noise(k: int) -> None:
    diffusion = GaussianDiffusion(ZeroDenoiser(), 32)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 3, 2, generator=gen)
    xk = torch.randn(4, 3, 2, generator=gen)
    mean, std = diffusion.posterior(xk, x0, k, -1)
    # float64 coefficients: c0 = 1 and ct = 0 up to a few ulps.
    torch.testing.assert_close(mean, x0, atol=1e-6, rtol=1e-6)
    assert abs(std) < 1e-6


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_eps_prediction_inverts_q_sample_given_true_noise(schedule: str) -> None:
    num_steps = 32
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(num_steps, 4, 3, generator=gen)
    noise = torch.randn(num_steps, 4, 3, generator=gen)
    diffusion = GaussianDiffusion(FixedOutputDenoiser(noise), num_steps, schedule,
                                  prediction="eps")
    k = torch.arange(num_steps)
    x_k = diffusion.q_sample(x0, k, noise)
    x0_hat = diffusion.predict_x0(x_k, None, k)
    # Division by sqrt(alpha_bar_k) amplifies float32 round-off (~1e-7 of |x_k|) by
    # 1 / sqrt(alpha_bar_k), which is large only at the noisiest steps.
    scale = 1 / diffusion.alpha_bar_at(torch.arange(diffusion.num_steps)).sqrt().view(-1, 1, 1)
    assert torch.all((x0_hat - x0).abs() <= 1e-6 * scale * (1 + x_k.abs()))


def test_x0_prediction_is_passed_through() -> None:
    out = torch.randn(2, 3, 4)
    diffusion = GaussianDiffusion(FixedOutputDenoiser(out), 16, prediction="x0")
    x0_hat = diffusion.predict_x0(torch.randn(2, 3, 4), None, torch.tensor([3, 7]))
    assert torch.equal(x0_hat, out)


def test_unknown_prediction_is_refused() -> None:
    with pytest.raises(ValueError, match="v"):
        GaussianDiffusion(ZeroDenoiser(), 16, prediction="v")


# ---------------------------------------------------------------------- strided timesteps
@settings(max_examples=200, deadline=None)
@given(data=st.data(), num_train=st.integers(2, 2000))
def test_strided_timesteps_span_the_chain(data: st.DataObject, num_train: int) -> None:
    n = data.draw(st.integers(2, num_train))
    ks = strided_timesteps(num_train, n)
    assert len(ks) == n
    assert ks[0] == num_train - 1 and ks[-1] == 0
    assert all(a > b for a, b in itertools.pairwise(ks))


@pytest.mark.parametrize("num_train", [1, 7, 128])
def test_single_sampling_step_starts_at_the_noisiest_index(num_train: int) -> None:
    # With one step the chain jumps from K-1 straight to clean data (k_prev = -1).
    assert strided_timesteps(num_train, 1) == [num_train - 1]


@pytest.mark.parametrize("num_train", [1, 10, 128])
def test_all_steps_gives_every_index(num_train: int) -> None:
    assert strided_timesteps(num_train, num_train) == list(range(num_train - 1, -1, -1))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), num_train=st.integers(1, 2000))
def test_trailing_timesteps_end_one_stride_above_zero(data: st.DataObject,
                                                      num_train: int) -> None:
    n = data.draw(st.integers(1, num_train))
    ks = strided_timesteps(num_train, n, "trailing")
    assert len(ks) == n and ks[0] == num_train - 1
    assert all(a > b for a, b in itertools.pairwise(ks))
    strides = [a - b for a, b in itertools.pairwise([*ks, -1])]  # the last step ends at -1
    assert max(strides) - min(strides) <= 1  # evenly spaced, the clean end included


def test_trailing_timesteps_worked_example() -> None:
    assert strided_timesteps(128, 2, "trailing") == [127, 63]
    assert strided_timesteps(128, 8, "trailing") == [127, 111, 95, 79, 63, 47, 31, 15]
    assert strided_timesteps(128, 2) == [127, 0]  # linspace: a call at the clean end
    assert strided_timesteps(10, 10, "trailing") == strided_timesteps(10, 10)


@pytest.mark.parametrize(("num_train", "n"), [(10, 0), (10, -1), (10, 11), (1, 2)])
@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
def test_strided_timesteps_refuses_out_of_range_counts(num_train: int, n: int,
                                                       spacing: str) -> None:
    with pytest.raises(ValueError, match="sampling steps"):
        strided_timesteps(num_train, n, spacing)


def test_unknown_spacing_is_refused() -> None:
    with pytest.raises(ValueError, match="spacing"):
        strided_timesteps(128, 4, "leading")


def test_x0_bound_clamps_predictions() -> None:
    """eps-prediction divides by sqrt(alpha_bar) ~ 0 at the noisiest step; the bound caps x0."""
    out = torch.full((2, 3, 4), 1.0)
    diffusion = GaussianDiffusion(FixedOutputDenoiser(out), 16, prediction="eps", x0_bound=5.0)
    x0_hat = diffusion.predict_x0(torch.full((2, 3, 4), -3.0), None, torch.tensor([15, 15]))
    assert x0_hat.abs().max().item() == pytest.approx(5.0)
