"""Running mean/std normalizers (Chan et al. parallel update), usable on numpy and torch data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn


class RunningNormalizer(nn.Module):
    """Per-feature running mean and standard deviation.

    Statistics live in float64 buffers so they round-trip through ``state_dict`` (safetensors)
    and accumulate without drift over millions of samples. ``normalize``/``unnormalize`` are
    differentiable, so a critic trained on raw states can be evaluated on normalized predictions.
    """

    def __init__(self, shape: int | tuple[int, ...], min_std: float = 1e-3):
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.min_std = min_std
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(shape, dtype=torch.float64))
        self._cache_key: tuple | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, x: np.ndarray | torch.Tensor) -> None:
        """Fold a batch ``(..., *shape)`` into the statistics."""
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float64)
        x = x.to(self.mean.device).reshape(-1, *self.mean.shape)
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(0)
        batch_m2 = ((x - batch_mean) ** 2).sum(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta**2 * self.count * n / total
        self.count.fill_(total)

    @property
    def std(self) -> torch.Tensor:
        """Population std, floored at ``min_std``; 1 before any data (identity normalization)."""
        # torch.where, not an `if` on count: reading a GPU tensor's value waits for the device
        return torch.where(self.count > 0,
                           torch.sqrt(self.m2 / self.count.clamp(min=1)).clamp(min=self.min_std),
                           torch.ones_like(self.m2))

    def stats(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) in ``dtype``, cached until the statistics change (an update, a load or
        a move gives the buffers a new version or address): the guided sampler normalizes
        several times per denoising step, and recomputing them is most of its small ops."""
        key = (dtype, self.mean.device, self.mean.data_ptr(), self.mean._version,
               self.m2._version, self.count._version)
        if self._cache_key != key:
            # outside inference mode, so that autograd may save the cached tensors later
            with torch.inference_mode(False), torch.no_grad():
                self._cache = (self.mean.to(dtype), self.std.to(dtype))
            self._cache_key = key
        return self._cache

    @contextmanager
    def private_stats(self, dtype: torch.dtype = torch.float32
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Within the block, normalizing in ``dtype`` reads a private copy of the current
        (mean, std), which is yielded; after it, the shared cache is back. A CUDA graph
        captured in the block reads these tensors at every replay, and its owner writes fresh
        statistics into them in place (:class:`agdrl.cuda_graph.CapturedChain`). Being
        private, they are never tensors that other code has saved for a backward pass."""
        shared = self.stats(dtype)
        key = self._cache_key
        private = (shared[0].clone(), shared[1].clone())
        self._cache = private
        try:
            yield private
        finally:
            if self._cache_key == key:
                self._cache = shared

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.stats(x.dtype)
        return (x - mean) / std

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.stats(x.dtype)
        return x * std + mean
