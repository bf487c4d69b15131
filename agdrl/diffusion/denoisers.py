"""Denoiser networks over trajectory segments.

Every denoiser maps ``(x_k, cond, k, label) -> output`` with
x_k: (B, H, Dx) noisy diffused variables, cond: (B, H, Dc) or None (conditioning actions),
k: (B,) diffusion step indices (integer values in [0, K), any dtype), label: (B,) a scalar
segment label (the standardized advantage, for classifier-free guidance) with NaN meaning "no
label", or None (no label for the whole batch); output: (B, H, Dx). Only denoisers built
``labelled`` accept a label.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from agdrl.config import DenoiserConfig


def sinusoidal_features(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style features [sin(p f_i), cos(p f_i)] with geometric frequencies
    f_i = 10000^(-i / half), i < half = dim // 2. positions: (N,) -> (N, 2 * half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / half)
    angles = positions.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer-style sinusoidal features of the diffusion step followed by a small MLP,
    plus (when ``labelled``) a linear embedding of the segment label.

    Steps are rescaled to a 0 … 1000 range so that any K gives comparable frequencies. The
    label enters as [y, 1] when given and [0, 0] when not (NaN or None), so "no label" is a
    learned embedding of its own, the bias. The label layer starts at zero: adding it leaves
    the network's function unchanged, so a trained unlabelled model can be fine-tuned with
    labels. k: (B,) step indices in [0, K) (integer values, any dtype), label: (B,) or None
    -> (B, dim).
    """

    def __init__(self, dim: int, num_steps: int, labelled: bool = False):
        super().__init__()
        self.dim = dim
        # the features of every step index, looked up rather than recomputed at each call
        # (non-persistent: saved models stay as they were)
        steps = torch.arange(num_steps) * (1000.0 / num_steps)
        self.register_buffer("features", sinusoidal_features(steps, dim), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * (dim // 2), dim * 2), nn.SiLU(),
                                 nn.Linear(dim * 2, dim))
        self.label = nn.Linear(2, dim) if labelled else None
        if self.label is not None:
            nn.init.zeros_(self.label.weight)
            nn.init.zeros_(self.label.bias)

    def forward(self, k: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.mlp(self.features[k.long()])
        if self.label is None:
            if label is not None:
                raise ValueError("this denoiser was built without a label input "
                                 "(DiffusionConfig.advantage_conditioning)")
            return emb
        if label is None:
            label = torch.full(k.shape, float("nan"), device=k.device)
        given = ~torch.isnan(label)
        features = torch.stack([torch.where(given, label, 0.0), given.float()], -1)
        return emb + self.label(features)


class ResidualBlock(nn.Module):
    """x + Linear(ReLU(LayerNorm(x)))."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(F.relu(self.norm(x)))


class ResidualMLPDenoiser(nn.Module):
    """Residual MLP over the flattened segment (the PolyGRAD/AGD reference denoiser).

    Input (flattened x and cond) is projected, the time embedding is added, then ``depth``
    residual blocks of ``width`` and a linear read-out. Horizon is fixed at construction.
    """

    def __init__(self, horizon: int, x_dim: int, cond_dim: int, cfg: DenoiserConfig,
                 num_steps: int, labelled: bool = False):
        super().__init__()
        self.horizon, self.x_dim, self.cond_dim = horizon, x_dim, cond_dim
        in_dim = horizon * (x_dim + cond_dim)
        embed = max(in_dim, cfg.time_embed_dim)
        self.proj = nn.Linear(in_dim, embed)
        self.time = SinusoidalTimeEmbedding(embed, num_steps, labelled)
        self.inp = nn.Linear(embed, cfg.width)
        self.blocks = nn.Sequential(*[ResidualBlock(cfg.width) for _ in range(cfg.depth)])
        self.out_norm = nn.LayerNorm(cfg.width)
        self.out = nn.Linear(cfg.width, horizon * x_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None, k: torch.Tensor,
                label: torch.Tensor | None = None) -> torch.Tensor:
        b, h, d = x.shape
        if h != self.horizon:
            raise ValueError(f"this MLP denoiser was built for H = {self.horizon}, got H = {h}")
        flat = x.reshape(b, -1) if cond is None else torch.cat([x, cond], -1).reshape(b, -1)
        hidden = self.inp(self.proj(flat) + self.time(k, label))
        hidden = F.relu(self.out_norm(self.blocks(hidden)))
        return self.out(hidden).reshape(b, h, d)


class TemporalResBlock(nn.Module):
    """Two Conv1d–GroupNorm–Mish layers with the time embedding added in between (Diffuser)."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, kernel: int = 5):
        super().__init__()
        groups = 8 if c_out % 8 == 0 else 1
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.norm1 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=kernel // 2)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.time = nn.Linear(time_dim, c_out)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, L), t_emb: (B, T) -> (B, C_out, L)."""
        h = F.mish(self.norm1(self.conv1(x))) + self.time(F.mish(t_emb))[:, :, None]
        h = F.mish(self.norm2(self.conv2(h)))
        return h + self.skip(x)


class TemporalUNetDenoiser(nn.Module):
    """Diffuser-style temporal 1-D U-Net over the time axis; works for any horizon.

    Channels ``width × (1, 2, 4, …)`` over ``depth`` levels; the horizon is padded up to a
    multiple of ``2^(depth-1)`` with zeros and cropped back, so odd H (10, 50, 51) are fine.
    """

    def __init__(self, x_dim: int, cond_dim: int, cfg: DenoiserConfig, num_steps: int,
                 labelled: bool = False):
        super().__init__()
        self.levels = cfg.depth
        dims = [cfg.width * 2**i for i in range(cfg.depth)]
        t_dim = cfg.time_embed_dim
        self.time = SinusoidalTimeEmbedding(t_dim, num_steps, labelled)
        self.inp = nn.Conv1d(x_dim + cond_dim, dims[0], 1)
        self.down = nn.ModuleList()
        for i, d in enumerate(dims):
            prev = dims[max(i - 1, 0)]
            last = i == len(dims) - 1
            self.down.append(nn.ModuleList([
                TemporalResBlock(prev, d, t_dim), TemporalResBlock(d, d, t_dim),
                nn.Identity() if last else nn.Conv1d(d, d, 3, stride=2, padding=1),
            ]))
        self.mid = nn.ModuleList([TemporalResBlock(dims[-1], dims[-1], t_dim),
                                  TemporalResBlock(dims[-1], dims[-1], t_dim)])
        self.up = nn.ModuleList()
        for i in reversed(range(len(dims) - 1)):
            self.up.append(nn.ModuleList([
                nn.ConvTranspose1d(dims[i + 1], dims[i + 1], 4, stride=2, padding=1),
                TemporalResBlock(dims[i + 1] + dims[i], dims[i], t_dim),
                TemporalResBlock(dims[i], dims[i], t_dim),
            ]))
        self.out = nn.Sequential(nn.Conv1d(dims[0], dims[0], 5, padding=2), nn.Mish(),
                                 nn.Conv1d(dims[0], x_dim, 1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None, k: torch.Tensor,
                label: torch.Tensor | None = None) -> torch.Tensor:
        _b, h, _d = x.shape
        inp = x if cond is None else torch.cat([x, cond], -1)
        multiple = 2 ** (self.levels - 1)
        padded = math.ceil(h / multiple) * multiple
        z = F.pad(inp.transpose(1, 2), (0, padded - h))
        t = self.time(k, label)
        z = self.inp(z)
        skips = []
        for block1, block2, downsample in self.down:
            z = block2(block1(z, t), t)
            skips.append(z)
            z = downsample(z)
        for block in self.mid:
            z = block(z, t)
        skips.pop()
        for upsample, block1, block2 in self.up:
            z = upsample(z)
            z = block2(block1(torch.cat([z, skips.pop()], 1), t), t)
        return self.out(z)[:, :, :h].transpose(1, 2)


class TransformerDenoiser(nn.Module):
    """A small pre-norm transformer encoder with one token per time step; any horizon.

    Tokens: Linear([x_t, cond_t]) + sinusoidal position + diffusion-time embedding.
    """

    def __init__(self, x_dim: int, cond_dim: int, cfg: DenoiserConfig, num_steps: int,
                 labelled: bool = False):
        super().__init__()
        self.width = cfg.width
        self.inp = nn.Linear(x_dim + cond_dim, cfg.width)
        self.time = SinusoidalTimeEmbedding(cfg.width, num_steps, labelled)
        layer = nn.TransformerEncoderLayer(cfg.width, cfg.heads, 4 * cfg.width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)
        self.out = nn.Linear(cfg.width, x_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None, k: torch.Tensor,
                label: torch.Tensor | None = None) -> torch.Tensor:
        inp = x if cond is None else torch.cat([x, cond], -1)
        positions = sinusoidal_features(torch.arange(x.shape[1], device=x.device), self.width)
        tokens = self.inp(inp) + positions + self.time(k, label)[:, None]
        return self.out(self.norm(self.encoder(tokens)))


def make_denoiser(cfg: DenoiserConfig, horizon: int, x_dim: int, cond_dim: int,
                  num_steps: int, labelled: bool = False) -> nn.Module:
    """Build the denoiser named by ``cfg.kind`` (with a label input when ``labelled``)."""
    if cfg.kind == "mlp":
        return ResidualMLPDenoiser(horizon, x_dim, cond_dim, cfg, num_steps, labelled)
    if cfg.kind == "unet":
        return TemporalUNetDenoiser(x_dim, cond_dim, cfg, num_steps, labelled)
    return TransformerDenoiser(x_dim, cond_dim, cfg, num_steps, labelled)
