"""Seeded random draws that give the same numbers on every device.

The trainer seeds CPU ``torch.Generator`` objects. A draw made with such a generator directly
on a CUDA tensor's device fails, and one made on the generator's own device and then moved
gives the same numbers whatever device the models are on, so same-seed runs on CPU and GPU
draw alike. Every generator-seeded draw in the library goes through these helpers.
"""

from __future__ import annotations

import torch


def _draw_device(generator: torch.Generator | None, device: torch.device | str
                 ) -> torch.device | str:
    return generator.device if generator is not None else device


def randn(shape: tuple[int, ...], generator: torch.Generator | None,
          device: torch.device | str) -> torch.Tensor:
    """Standard normal noise of ``shape`` drawn on the generator's device, moved to ``device``."""
    return torch.randn(shape, generator=generator,
                       device=_draw_device(generator, device)).to(device)


def rand(shape: tuple[int, ...], generator: torch.Generator | None,
         device: torch.device | str) -> torch.Tensor:
    """Uniform [0, 1) samples of ``shape``, drawn as :func:`randn`."""
    return torch.rand(shape, generator=generator,
                      device=_draw_device(generator, device)).to(device)


def randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None,
            device: torch.device | str) -> torch.Tensor:
    """Integers in [0, high) of ``shape``, drawn as :func:`randn`."""
    return torch.randint(0, high, shape, generator=generator,
                         device=_draw_device(generator, device)).to(device)
