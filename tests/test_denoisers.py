"""Denoiser networks: shapes for any horizon, dependence on inputs, size, gradient flow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agdrl.config import DenoiserConfig, reference_denoiser
from agdrl.diffusion.denoisers import SinusoidalTimeEmbedding, make_denoiser, sinusoidal_features

NUM_STEPS = 20
X_DIM = 5

# Small but structurally complete: the U-Net keeps its default 4 levels (so horizons are padded
# to a multiple of 8 and cropped back), with 8 channels so GroupNorm(8) is used throughout.
TINY = {
    "mlp": DenoiserConfig(kind="mlp", width=32, depth=2, time_embed_dim=16),
    "unet": DenoiserConfig(kind="unet", width=8, depth=4, time_embed_dim=16),
    "transformer": DenoiserConfig(kind="transformer", width=32, depth=2, time_embed_dim=16,
                                  heads=4),
}

# (kind, horizon): the MLP is built for one horizon; the others must handle odd ones too.
SHAPE_CASES = [("mlp", 10), ("mlp", 50)] + [
    (kind, h) for kind in ("unet", "transformer") for h in (10, 50, 51, 7)
]


def inputs(batch: int, horizon: int, cond_dim: int, seed: int = 0
           ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, horizon, X_DIM, generator=gen)
    cond = torch.randn(batch, horizon, cond_dim, generator=gen) if cond_dim else None
    k = torch.randint(0, NUM_STEPS, (batch,), generator=gen).float()
    return x, cond, k


def build(kind: str, horizon: int, cond_dim: int) -> nn.Module:
    torch.manual_seed(0)
    return make_denoiser(TINY[kind], horizon, X_DIM, cond_dim, NUM_STEPS)


@pytest.mark.parametrize(("kind", "horizon"), SHAPE_CASES)
@pytest.mark.parametrize("cond_dim", [0, 3])
def test_output_has_the_input_shape(kind: str, horizon: int, cond_dim: int) -> None:
    net = build(kind, horizon, cond_dim)
    x, cond, k = inputs(2, horizon, cond_dim)
    out = net(x, cond, k)
    assert out.shape == (2, horizon, X_DIM)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["mlp", "unet", "transformer"])
def test_output_depends_on_conditioning_and_step(kind: str) -> None:
    # Guards against an input being silently dropped (e.g. cond never concatenated).
    net = build(kind, 10, 3)
    x, cond, k = inputs(2, 10, 3)
    out = net(x, cond, k)
    assert cond is not None
    assert not torch.allclose(out, net(x, cond + 1.0, k))
    assert not torch.allclose(out, net(x, cond, (k + 7) % NUM_STEPS))


@pytest.mark.parametrize("kind", ["unet", "transformer"])
def test_batch_items_are_processed_independently(kind: str) -> None:
    # Each item's output must depend on that item alone (no batch-level coupling).
    net = build(kind, 7, 3)
    x, cond, k = inputs(3, 7, 3)
    full = net(x, cond, k)
    assert cond is not None
    single = net(x[1:2], cond[1:2], k[1:2])
    torch.testing.assert_close(full[1:2], single, atol=1e-5, rtol=1e-5)


def test_mlp_refuses_another_horizon() -> None:
    net = build("mlp", 10, 0)
    x, cond, k = inputs(2, 11, 0)
    with pytest.raises(ValueError, match="H = 10"):
        net(x, cond, k)


def test_reference_mlp_has_the_papers_size() -> None:
    # Hopper: 11 state dims + reward + terminal diffused, 3 action dims as conditioning, H = 10.
    net = make_denoiser(reference_denoiser(), 10, 11 + 2, 3, 128)
    count = sum(p.numel() for p in net.parameters())
    # PolyGRAD / AGD-MBRL report ~6.7 M parameters; allow the rounding of "6.7 M" and small
    # differences in embedding sizes.
    assert 6.5e6 <= count <= 7.0e6


@pytest.mark.parametrize("kind", ["mlp", "unet", "transformer"])
@pytest.mark.parametrize("horizon", [7, 10])
def test_gradient_reaches_every_parameter(kind: str, horizon: int) -> None:
    net = build(kind, horizon, 3)
    x, cond, k = inputs(4, horizon, 3)
    net(x, cond, k).pow(2).mean().backward()
    # Checked per tensor, not per element: attention's key bias (a slice of in_proj_bias)
    # legitimately gets zero gradient because softmax ignores a per-query constant shift.
    dead = [name for name, p in net.named_parameters()
            if p.grad is None or p.grad.abs().sum().item() == 0.0]
    assert dead == []


@pytest.mark.parametrize("kind", ["mlp", "unet", "transformer"])
def test_label_input(kind: str):
    """A labelled denoiser reads the label (NaN and None both mean "no label"); an unlabelled
    one refuses a label."""
    torch.manual_seed(0)
    cfg = DenoiserConfig(kind=kind, width=16, depth=2, heads=2)
    net = make_denoiser(cfg, 6, 4, 2, 16, labelled=True)
    x, cond, k = torch.randn(3, 6, 4), torch.randn(3, 6, 2), torch.tensor([0.0, 5.0, 9.0])
    plain = make_denoiser(cfg, 6, 4, 2, 16)
    plain.load_state_dict(net.state_dict(), strict=False)
    # the label layer starts at zero: the same function as the unlabelled network
    torch.testing.assert_close(net(x, cond, k, torch.ones(3)), plain(x, cond, k))
    nn.init.normal_(net.time.label.weight)
    nn.init.normal_(net.time.label.bias)
    none = net(x, cond, k, None)
    torch.testing.assert_close(net(x, cond, k, torch.full((3,), float("nan"))), none)
    labels = torch.tensor([1.0, float("nan"), -2.0])
    mixed = net(x, cond, k, labels)
    torch.testing.assert_close(mixed[1], none[1])  # per-sample: only labelled rows change
    assert not torch.allclose(mixed[0], none[0]) and not torch.allclose(mixed[2], none[2])
    with pytest.raises(ValueError, match="label"):
        plain(x, cond, k, labels)


def test_step_features_are_the_formula_and_are_not_saved() -> None:
    """The time embedding looks its step features up in a table: the same numbers as the
    formula at the rescaled step, for float or integer step tensors, and not part of the
    saved weights (models saved before the table load unchanged)."""
    embedding = SinusoidalTimeEmbedding(16, num_steps=32)
    k = torch.tensor([0, 5, 31])
    torch.testing.assert_close(embedding.features[k],
                               sinusoidal_features(k.float() * (1000.0 / 32), 16), rtol=0, atol=0)
    torch.testing.assert_close(embedding(k), embedding(k.float()))
    assert not any("features" in key for key in embedding.state_dict())
