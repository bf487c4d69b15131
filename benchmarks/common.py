"""Helpers shared by the benchmark scripts beside this file."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

from agdrl.config import ImaginationConfig


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up call. ``fn`` must
    wait for its device's work itself (``torch.cuda.synchronize``) where that matters."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def with_sampler(cfg: ImaginationConfig, spec: str, **changes: object) -> ImaginationConfig:
    """``cfg`` with the sampler of ``spec`` = 'KIND[:STEPS[:SPACING]]' (for example 'ddim:8',
    'ddpm:128', 'ddim:2:trailing'; no STEPS: all K) and any other ``changes``."""
    kind, _, rest = spec.partition(":")
    steps, _, spacing = rest.partition(":")
    return dataclasses.replace(cfg, sampler=kind, sampler_steps=int(steps or 0),
                               sampler_spacing=spacing or cfg.sampler_spacing, **changes)
