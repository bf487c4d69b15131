"""Classifier-free advantage guidance on a system with process noise: asking for a high
advantage must give segments whose outcome is better than asking for a low one."""

from __future__ import annotations

import numpy as np
import torch

from agdrl.buffer import ReplayBuffer
from agdrl.config import DenoiserConfig, DiffusionConfig
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.guidance import ClassifierFreeGuidance, advantage_labels
from agdrl.segments import Segment


def noisy_buffer(episodes: int = 300, length: int = 12, seed: int = 0) -> ReplayBuffer:
    """s' = 0.9 s + 0.2 a + 0.3 ε in 1-D, reward -s²: with s_0 and the actions given, only
    the noise decides how good a segment is, so an advantage label carries information the
    actions do not."""
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(1, 1, capacity=episodes * length)
    for _ in range(episodes):
        s = rng.normal(size=1)
        for t in range(length):
            a = rng.uniform(-1, 1, 1)
            s2 = 0.9 * s + 0.2 * a + 0.3 * rng.normal(size=1)
            buf.add(s, a, -float(s[0] ** 2), s2, False, t == length - 1)
            s = s2
    return buf


def test_asking_for_a_higher_advantage_gives_better_segments():
    torch.manual_seed(0)
    buf = noisy_buffer()
    cfg = DiffusionConfig(horizon=5, num_steps=16, batch_size=128, lr=1e-3,
                          denoiser=DenoiserConfig(width=64, depth=2),
                          advantage_conditioning=True, condition_dropout=0.2)
    wm = DiffusionWorldModel(1, 1, cfg)
    n = buf.size
    wm.update_normalizers(buf.obs[:n], buf.actions[:n], buf.rewards[:n])
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)

    def zero_value(states: torch.Tensor) -> torch.Tensor:
        return torch.zeros(states.shape[:-1], dtype=states.dtype)

    for _ in range(1500):
        batch = buf.sample_segments(cfg.batch_size, cfg.horizon, rng)
        seg = Segment.from_numpy(batch.states, batch.actions, batch.rewards, batch.terminals)
        labels = advantage_labels(zero_value, seg, torch.as_tensor(batch.mask), 0.99)
        wm.train_step(batch, gen, labels)

    s0 = torch.full((512, 1), 0.5)
    actions = torch.zeros(512, cfg.horizon, 1)
    sampler = wm.default_sampler("ddpm")

    def outcome(target: float | None) -> float:
        wrap = None if target is None else (
            lambda net: ClassifierFreeGuidance(net, target, weight=1.0))
        seg = wm.sample(s0, sampler, actions, generator=torch.Generator().manual_seed(1),
                        wrap_denoiser=wrap)
        return float(-(seg.states[:, 1:, 0] ** 2).sum(1).mean())  # Σ of later rewards

    low, free, high = outcome(-1.5), outcome(None), outcome(1.5)
    assert low < free < high
    # the true outcome has std ≈ 1.4 (mean ≈ -1.35); a label the model ignored gives no gap
    assert high - low > 1.0
