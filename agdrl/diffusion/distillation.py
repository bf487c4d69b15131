"""Distillation of the world model's denoiser into a student that samples in 1–4 steps.

Progressive distillation (Salimans & Ho 2022), with m teacher steps per student step instead
of two, so one round reaches the wanted step count. The student has the teacher's architecture
(and starts from its weights when distilled after the fact). The teacher's chain is the
n·m-step grid ``strided_timesteps(K, n·m)``; the student's grid is every m-th index of it, so
each student step k -> k' spans exactly m teacher steps (the last one ending on clean data).
For a student step, the teacher (the EMA denoiser) runs its m deterministic steps from x_k and
reaches x_{k'}. The student's target is the clean segment x̃_0 for which one DDIM step from
x_k lands exactly there:

    x_{k'} = cx x_k + ca x̃_0   =>   x̃_0 = (x_{k'} - cx x_k) / ca,

with (cx, ca) the first-order exponential-integrator (= DDIM) coefficients; to clean data
(k' = -1) x̃_0 = x_{k'}. Sampling the student with DDIM on its grid then follows the
teacher's n·m-step chain. Guidance is untouched: hooks edit the student's x̂_0 at each of
its steps as they would any denoiser's, and the actions inside the teacher's chain are the
segment's own.
"""

from __future__ import annotations

import torch
from torch import nn

from agdrl.config import SamplerKind
from agdrl.diffusion.process import GaussianDiffusion, Inpainting
from agdrl.diffusion.samplers import Sampler
from agdrl.diffusion.schedules import strided_timesteps
from agdrl.rng import randint, randn


class StudentDistillation:
    """The targets and loss of distilling ``diffusion`` into an n-step DDIM student.

    student_steps: n; teacher_steps: total steps of the teacher's chain (a multiple of n);
    teacher: 'ddim' or 'heun', the deterministic sampler that makes the targets. ``grid`` holds
    the student's indices, ``next`` where each of its steps ends (-1: clean data), ``chains``
    the teacher's indices inside each.
    """

    def __init__(self, diffusion: GaussianDiffusion, student_steps: int, teacher_steps: int,
                 teacher: SamplerKind = "ddim"):
        if teacher not in ("ddim", "heun"):
            raise ValueError(f"the teacher must be a deterministic sampler ('ddim' or 'heun'), "
                             f"got {teacher!r}")
        if teacher_steps % student_steps or teacher_steps < student_steps:
            raise ValueError(f"teacher steps {teacher_steps} must be a multiple of student "
                             f"steps {student_steps}")
        self.diffusion = diffusion
        m = teacher_steps // student_steps
        teacher_grid = strided_timesteps(diffusion.num_steps, teacher_steps)
        self.chains = [teacher_grid[i : i + m] for i in range(0, teacher_steps, m)]
        self.grid = [chain[0] for chain in self.chains]
        self.next = [*self.grid[1:], -1]
        self.teacher = Sampler(teacher, clip_max_step=-1)

    @torch.no_grad()
    def targets(self, x_k: torch.Tensor, step: torch.Tensor, cond: torch.Tensor | None,
                pin: Inpainting, teacher: nn.Module) -> torch.Tensor:
        """x̃_0: (B, H, Dx) for noisy segments x_k: (B, H, Dx) at student step ``step``: (B,)
        (positions on the student grid), run through ``teacher`` with pins ``pin``."""
        out = torch.empty_like(x_k)
        for i in step.unique().tolist():
            rows = step == i
            sub_pin = Inpainting(pin.mask[rows], pin.values[rows])
            x_end, _ = self.teacher.denoise(self.diffusion, x_k[rows], self.chains[i],
                                            self.next[i], None if cond is None else cond[rows],
                                            sub_pin, denoiser=teacher)
            k, k_next = self.grid[i], self.next[i]
            if k_next < 0:
                out[rows] = x_end
            else:
                cx, ca, _, _ = self.diffusion.integrator_coefficients(k, k_next)
                out[rows] = (x_end - cx * x_k[rows]) / ca
        return pin.apply(out)

    def loss(self, student: nn.Module, teacher: nn.Module, x0: torch.Tensor,
             cond: torch.Tensor | None, weight: torch.Tensor, pin: Inpainting,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Weighted MSE between the student's x̂_0 and x̃_0 on real segments x0: (B, H, Dx)
        noised to a random step of the student's grid (as :meth:`GaussianDiffusion.loss`)."""
        b = x0.shape[0]
        step = randint(len(self.grid), (b,), generator, x0.device)
        k = torch.as_tensor(self.grid, device=x0.device)[step]
        noise = randn(x0.shape, generator, x0.device)
        x_k = pin.apply(self.diffusion.q_sample(x0, k, noise))
        target = self.targets(x_k, step, cond, pin, teacher)
        predicted = self.diffusion.predict_x0(x_k, cond, k, student)
        return ((predicted - target) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)
