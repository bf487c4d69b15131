"""Named configurations: ``paper`` (the papers' defaults), ``fast`` (what a 2-core CPU can run),
``demo`` (the README's main job) and ``tiny`` (seconds-long pipeline checks, not for results)."""

from __future__ import annotations

import dataclasses

from agdrl.config import (
    ActorCriticConfig,
    DenoiserConfig,
    DiffusionConfig,
    ImaginationConfig,
    TrainConfig,
    reference_denoiser,
)

PRESETS: dict[str, TrainConfig] = {
    # the papers' defaults (DESIGN §2.2–2.5): reference MLP, 128-step DDPM, 512 segments,
    # PolyGRAD's policy guidance (noisy actions pulled toward π by a step tuned online)
    "paper": TrainConfig(diffusion=DiffusionConfig(denoiser=reference_denoiser()),
                         imagination=ImaginationConfig(policy_guidance="pull")),
    # what a 2-core CPU can run, and what learns (docs/learning.md): segments of 4 states
    # chained 10 times (imagined trajectories of 31 states; one 10-state segment stalls),
    # actions that are π's samples at the final states (relaxation 1, a settle step), 2-step
    # DDIM on a trailing grid, 96 trajectories per update (about 0.1 s per env step), a
    # smaller MLP, a shorter random prefill
    "fast": TrainConfig(
        prefill_steps=1_000, eval_every=1_000, eval_episodes=10,
        diffusion=DiffusionConfig(horizon=4, denoiser=DenoiserConfig(width=512, depth=4)),
        imagination=ImaginationConfig(batch_size=96, sampler="ddim", sampler_steps=2,
                                      sampler_spacing="trailing", segments=10,
                                      policy_relaxation=1.0, settle_steps=1)),
}
# the README's main job: the fast preset on InvertedPendulum for 4000 steps (under 5 minutes
# on 2 cores, install included)
PRESETS["demo"] = dataclasses.replace(PRESETS["fast"], total_steps=4_000, eval_every=500)
# seconds-long runs with tiny models, for checking a pipeline end to end (tests, smoke sweeps);
# not for results
PRESETS["tiny"] = TrainConfig(
    total_steps=300, prefill_steps=150, pretrain_steps=20, eval_every=150, eval_episodes=2,
    diffusion=DiffusionConfig(num_steps=8, batch_size=32,
                              denoiser=DenoiserConfig(width=32, depth=1)),
    agent=ActorCriticConfig(hidden=16),
    imagination=ImaginationConfig(batch_size=32, sampler="ddim", sampler_steps=2))
