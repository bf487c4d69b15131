"""The samplers against a closed form: with Gaussian data the exact denoiser and the exact
end of the probability-flow ODE are known, so each sampler's error and its order of
convergence can be checked; guidance edits must act like a guided denoiser."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from agdrl.diffusion.process import GaussianDiffusion
from agdrl.diffusion.samplers import Sampler, StepState
from agdrl.diffusion.schedules import exponential_integrator_coefficients
from agdrl.rng import randn

MEAN, STD = 0.3, 0.5  # the data distribution: every entry i.i.d. N(MEAN, STD²)
K = 128
SHAPE = (256, 4, 3)


class GaussianDenoiser(nn.Module):
    """The exact x̂_0 = E[x_0 | x_k] for data N(MEAN, STD²), plus a constant ``offset``."""

    def __init__(self, offset: float = 0.0):
        super().__init__()
        self.offset = offset
        self.diffusion: GaussianDiffusion | None = None

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None, k: torch.Tensor,
                label: torch.Tensor | None = None) -> torch.Tensor:
        ab = self.diffusion.alpha_bar_ext[k.long() + 1].view(-1, 1, 1)
        gain = ab.sqrt() * STD**2 / (ab * STD**2 + 1 - ab)
        return (MEAN + gain * (x.double() - ab.sqrt() * MEAN)).float() + self.offset


def gaussian_process(offset: float = 0.0) -> GaussianDiffusion:
    net = GaussianDenoiser(offset)
    diffusion = GaussianDiffusion(net, K, "cosine", 1.0, "x0")
    net.diffusion = diffusion
    return diffusion


def exact_flow_end(diffusion: GaussianDiffusion, x_start: torch.Tensor) -> torch.Tensor:
    """Where the probability-flow ODE takes x at the noisiest index K-1 at index 0, followed
    by the exact x̂_0 there (every sampler's last step): along the flow, the standardized
    z = (x_k - sqrt(ab_k) MEAN) / sqrt(ab_k STD² + 1 - ab_k) is constant."""
    ab = diffusion.alpha_bar_ext
    a_start, a_end = ab[K], ab[1]
    z = (x_start.double() - a_start.sqrt() * MEAN) / (a_start * STD**2 + 1 - a_start).sqrt()
    x_end = a_end.sqrt() * MEAN + (a_end * STD**2 + 1 - a_end).sqrt() * z
    return MEAN + a_end.sqrt() * STD**2 / (a_end * STD**2 + 1 - a_end) * (x_end
                                                                            - a_end.sqrt() * MEAN)


def flow_error(kind: str, steps: int, spacing: str = "linspace") -> float:
    diffusion = gaussian_process()
    start = randn(SHAPE, torch.Generator().manual_seed(0), "cpu")
    x, _ = Sampler(kind, steps=steps, clip_max_step=-1, spacing=spacing).sample(
        diffusion, SHAPE, generator=torch.Generator().manual_seed(0))
    return (x.double() - exact_flow_end(diffusion, start)).abs().max().item()


def test_first_order_coefficients_are_ddim() -> None:
    """cx x + ca x̂_0 equals DDIM's sqrt(ab') x̂_0 + sqrt(1 - ab') ε̂ for any x, x̂_0."""
    ab, ab_prev = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    cx, ca, cl, h = exponential_integrator_coefficients(ab, ab_prev)
    x, x0 = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    torch.testing.assert_close(cx * x + ca * x0, ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps)
    assert h > 0 and 0 < cl < ca  # the linear term's weight lies below the constant term's


@pytest.mark.parametrize("h", [1e-3, 0.5, 3.0, 12.0])
def test_integrator_coefficients_integrate_exp_exactly(h: float) -> None:
    """ca and cl against the integrals σ' ∫ e^λ dλ and σ' ∫ e^λ (λ - λ_t)/h dλ, done by a
    fine midpoint rule, for steps from tiny to huge in log-SNR."""
    lam_t = -2.0
    lam_p = lam_t + h
    ab = torch.sigmoid(torch.tensor(2 * lam_t, dtype=torch.float64))  # λ = log(α/σ)
    ab_prev = torch.sigmoid(torch.tensor(2 * lam_p, dtype=torch.float64))
    cx, ca, cl, h_out = exponential_integrator_coefficients(ab, ab_prev)
    torch.testing.assert_close(h_out, torch.tensor(h, dtype=torch.float64))
    n = 200_000
    lam = lam_t + (torch.arange(n, dtype=torch.float64) + 0.5) * h / n
    sigma_p = (1 - ab_prev).sqrt()
    torch.testing.assert_close(ca, sigma_p * torch.exp(lam).sum() * h / n, rtol=1e-6, atol=0)
    torch.testing.assert_close(cl, sigma_p * (torch.exp(lam) * (lam - lam_t) / h).sum() * h / n,
                               rtol=1e-6, atol=0)
    torch.testing.assert_close(cx, sigma_p / (1 - ab).sqrt())


def test_ddim_converges_at_first_order() -> None:
    errors = [flow_error("ddim", n) for n in (16, 32, 64)]
    for coarse, fine in itertools.pairwise(errors):
        assert 1.7 < coarse / fine < 2.3, errors


@pytest.mark.parametrize("kind", ["heun", "dpm2m"])
def test_second_order_samplers_converge_faster_than_ddim(kind: str) -> None:
    """Doubling the steps divides the error by about 4 (DDIM: 2), and at 64 steps the error
    is several times DDIM's."""
    coarse, fine = flow_error(kind, 32), flow_error(kind, 64)
    assert coarse / fine > 3.3, (coarse, fine)
    assert flow_error("ddim", 64) > 3 * fine


@pytest.mark.parametrize("kind", ["ddim", "heun"])
@pytest.mark.parametrize(("steps", "gain"), [(2, 1.5), (4, 1.2), (8, 1.05)])
def test_trailing_grid_is_more_accurate_with_few_steps(kind: str, steps: int,
                                                       gain: float) -> None:
    """The linspace grid spends its last call at index 0, where nothing is left to denoise;
    the trailing grid spends it higher up and ends nearer the exact flow. (DPM-Solver++(2M)
    on linspace overshoots erratically, once below the trailing error: next test.)"""
    assert flow_error(kind, steps) > gain * flow_error(kind, steps, "trailing")


def test_dpm_solver_converges_at_second_order_on_the_trailing_grid() -> None:
    """On the linspace grid DPM-Solver++(2M)'s last multistep lands at index 0, where the
    log-SNR step is huge and the extrapolation overshoots (its error is not monotone in
    the steps); on the trailing grid it converges faster than second order."""
    errors = [flow_error("dpm2m", n, "trailing") for n in (4, 8, 16)]
    for coarse, fine in itertools.pairwise(errors):
        assert coarse / fine > 3.5, errors
    assert flow_error("dpm2m", 8) > flow_error("dpm2m", 4)  # the linspace overshoot


def test_unknown_spacing_is_refused_by_the_sampler() -> None:
    with pytest.raises(ValueError, match="spacing"):
        Sampler("ddim", steps=4, spacing="leading")


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "heun", "dpm2m"])
def test_hook_edit_acts_as_a_guided_denoiser(kind: str) -> None:
    """A hook that adds a constant to x̂_0 gives the sample of a denoiser that adds it (for
    Heun too: the edit is held over the step's second evaluation, exact for a constant)."""
    def add(state: StepState) -> None:
        state.x0 = state.x0 + 0.2

    sampler = Sampler(kind, steps=8, eta=0.5 if kind == "ddim" else 0.0)
    hooked, _ = sampler.sample(gaussian_process(), SHAPE, hook=add,
                               generator=torch.Generator().manual_seed(1))
    shifted, _ = sampler.sample(gaussian_process(offset=0.2), SHAPE,
                                generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(hooked, shifted, rtol=1e-5, atol=1e-5)
    unshifted, _ = sampler.sample(gaussian_process(), SHAPE,
                                  generator=torch.Generator().manual_seed(1))
    assert (hooked - unshifted).mean() > 0.1  # the edit did reach the sample


def test_network_calls_and_bad_kinds() -> None:
    assert Sampler("heun", steps=4).network_calls(K) == 7
    assert Sampler("dpm2m", steps=4).network_calls(K) == 4
    assert Sampler("ddim", steps=500).network_calls(K) == K
    with pytest.raises(ValueError, match="choose one of ddpm, ddim, heun, dpm2m"):
        Sampler("euler")


class ConditionDenoiser(nn.Module):
    """x̂_0 = the conditioning (a model whose clean sample is set by its actions alone)."""

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None, k: torch.Tensor,
                label: torch.Tensor | None = None) -> torch.Tensor:
        return cond.clone()


def test_settle_steps_iterate_the_clean_prediction_and_the_hook() -> None:
    """After the chain, each settle step predicts x̂_0 at index 0 from the last result under
    the conditioning the hook last set, and calls the hook as a last step (k = 0, k_prev = −1,
    no noise; the index goes on). With a conditioning that the hook derives from the states,
    c ← x̂_0 / 2 + 1, the pair converges to the fixed point x = c = 2, one halving of the
    error per settle step; no noise is drawn for them."""
    calls: list[tuple[int, int, int, float]] = []

    def halve(state: StepState) -> None:
        calls.append((state.index, state.k, state.k_prev, state.noise_std))
        state.cond = state.x0 / 2 + 1

    diffusion = GaussianDiffusion(ConditionDenoiser(), 16, "cosine", 1.0, "x0")
    cond = torch.zeros(2, 4, 3)
    results = {}
    for settle in (0, 3, 30):
        gen = torch.Generator().manual_seed(0)
        calls.clear()
        x, last = Sampler("ddim", steps=4, settle_steps=settle).sample(
            diffusion, (2, 4, 3), cond=cond, hook=halve, generator=gen)
        results[settle] = (x, last, gen.get_state())
        assert calls[4:] == [(4 + i, 0, -1, 0.0) for i in range(settle)]
    torch.testing.assert_close(results[3][0], 2 - (2 - results[0][1]) / 4)  # x_n = c_{n-1}
    torch.testing.assert_close(results[30][0], torch.full((2, 4, 3), 2.0))
    assert torch.equal(results[0][2], results[30][2])
    assert Sampler("ddim", steps=4, settle_steps=3).network_calls(16) == 7
    with pytest.raises(ValueError, match="settle_steps"):
        Sampler("ddim", steps=4, settle_steps=-1)


@pytest.mark.parametrize(("kind", "eta"), [("ddim", 0.0), ("heun", 0.0), ("dpm2m", 0.0)])
def test_deterministic_samplers_draw_only_the_starting_noise(kind: str, eta: float) -> None:
    """A chain that adds no noise draws none: the generator moves by the start noise alone."""
    gen, reference = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    Sampler(kind, steps=6, eta=eta).sample(gaussian_process(), SHAPE, generator=gen)
    randn(SHAPE, reference, "cpu")
    assert torch.equal(gen.get_state(), reference.get_state())
    stochastic = torch.Generator().manual_seed(3)
    Sampler("ddim", steps=6, eta=0.5).sample(gaussian_process(), SHAPE, generator=stochastic)
    assert not torch.equal(stochastic.get_state(), reference.get_state())


def test_explicit_timesteps_are_followed_and_checked() -> None:
    sampler = Sampler("ddim", timesteps=(100, 40, 3))
    assert sampler.grid(K) == [100, 40, 3] and sampler.network_calls(K) == 3
    with pytest.raises(ValueError, match="beyond"):
        sampler.grid(64)
    for bad in ((), (3, 40), (5, -1)):
        with pytest.raises(ValueError, match="decreasing"):
            Sampler("ddim", timesteps=bad)
