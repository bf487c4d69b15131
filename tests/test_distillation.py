"""Distillation into a few-step student: the targets reproduce the teacher's chain exactly,
a student trained on them samples in 2 steps what the teacher needs 8 for, guidance still
steers it, and it is saved, loaded and checkpointed with the world model."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from agdrl import AGDMBRL, PRESETS
from agdrl.buffer import ReplayBuffer
from agdrl.config import ConfigError, DiffusionConfig
from agdrl.diffusion.distillation import StudentDistillation
from agdrl.diffusion.process import GaussianDiffusion, Inpainting
from agdrl.diffusion.samplers import Sampler, StepState
from agdrl.diffusion.schedules import strided_timesteps
from agdrl.diffusion.world_model import DiffusionWorldModel

Factory = Callable[..., DiffusionWorldModel]


class Fixed(nn.Module):
    """Returns a stored x̂_0 whatever its input."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x, cond, k, label=None):
        return self.out


class Linear(nn.Module):
    """A fixed nonlinear map of (x, cond, k) standing in for a teacher network."""

    def forward(self, x, cond, k, label=None):
        return torch.tanh(0.7 * x + 0.01 * k.view(-1, 1, 1)) + 0.1 * cond.mean(-1, keepdim=True)


@pytest.mark.parametrize(("student", "teacher"), [(1, 8), (2, 8), (4, 8), (4, 16), (3, 3)])
def test_student_steps_partition_the_teachers_grid(student: int, teacher: int) -> None:
    """Each student step spans exactly m = teacher / student teacher steps: the chains joined
    are the teacher's whole grid, each starts at the student's index, and each ends where the
    next begins (the last on clean data)."""
    diffusion = GaussianDiffusion(Linear(), 128, "cosine", 1.0, "x0")
    distill = StudentDistillation(diffusion, student, teacher)
    assert [k for chain in distill.chains for k in chain] == strided_timesteps(128, teacher)
    assert all(len(chain) == teacher // student for chain in distill.chains)
    assert distill.grid == [chain[0] for chain in distill.chains]
    assert distill.next == [*distill.grid[1:], -1]
    assert len(distill.grid) == student


@pytest.mark.parametrize("teacher", ["ddim", "heun"])
def test_one_student_step_on_the_target_lands_where_the_teacher_chain_ends(teacher: str
                                                                           ) -> None:
    """x̃_0 is exact: a DDIM step from x_k with x̂_0 = x̃_0 reaches the end of the teacher's
    m-step chain, at every position of the student's grid (the last one lands on clean data),
    and the pinned entries stay pinned."""
    diffusion = GaussianDiffusion(Linear(), 32, "cosine", 1.0, "x0")
    distill = StudentDistillation(diffusion, student_steps=4, teacher_steps=16, teacher=teacher)
    torch.manual_seed(0)
    b = 6
    x_k, cond = torch.randn(b, 5, 3), torch.randn(b, 5, 2)
    mask = torch.zeros(b, 5, 3, dtype=torch.bool)
    mask[:, 0, :2] = True
    pin = Inpainting(mask, torch.randn(b, 5, 3))
    x_k = pin.apply(x_k)
    step = torch.tensor([0, 1, 2, 3, 3, 0])
    target = distill.targets(x_k, step, cond, pin, diffusion.denoiser)
    for row in range(b):
        i = int(step[row])
        one = slice(row, row + 1)
        row_pin = Inpainting(mask[one], pin.values[one])
        chain_end, _ = distill.teacher.denoise(diffusion, x_k[one], distill.chains[i],
                                               distill.next[i], cond[one], row_pin)
        student_end, _ = Sampler("ddim", clip_max_step=-1).denoise(
            diffusion, x_k[one], [distill.grid[i]], distill.next[i], cond[one], row_pin,
            denoiser=Fixed(target[one]))
        torch.testing.assert_close(student_end, chain_end, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(target[mask], pin.values[mask])


class EntryMLP(nn.Module):
    """A student for i.i.d. data: the same small MLP on every entry, fed (x, k / K)."""

    def __init__(self, num_steps: int):
        super().__init__()
        self.num_steps = num_steps
        self.net = nn.Sequential(nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(),
                                 nn.Linear(64, 1))

    def forward(self, x, cond, k, label=None):
        t = (k / self.num_steps).view(-1, 1, 1).expand_as(x)
        return x + self.net(torch.stack([x, t], -1))[..., 0]


def test_two_step_student_of_an_exact_teacher_beats_two_teacher_steps() -> None:
    """Gaussian data, whose exact denoiser is the teacher and whose exact sample from each
    noise is known: a 2-step student distilled from 32 teacher DDIM steps lands several times
    closer to the exact sample than 2 DDIM steps of the exact teacher itself, and close to
    the 32-step chain it learned from."""
    from test_samplers import SHAPE, exact_flow_end, gaussian_process

    diffusion = gaussian_process()
    teacher = diffusion.denoiser
    distill = StudentDistillation(diffusion, student_steps=2, teacher_steps=32)
    torch.manual_seed(0)
    student = EntryMLP(diffusion.num_steps)
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    no_pin = Inpainting(torch.zeros(64, 4, 3, dtype=torch.bool), torch.zeros(64, 4, 3))
    gen = torch.Generator().manual_seed(0)
    for _ in range(1500):
        x0 = 0.3 + 0.5 * torch.randn(64, 4, 3, generator=gen)
        loss = distill.loss(student, teacher, x0, None, torch.ones_like(x0), no_pin, gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def end(sampler: Sampler, net: nn.Module) -> torch.Tensor:
        x, _ = sampler.sample(diffusion, SHAPE, denoiser=net,
                              generator=torch.Generator().manual_seed(5))
        return x.double()

    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    exact = exact_flow_end(diffusion, start)
    rms = lambda a, b: (a - b).pow(2).mean().sqrt().item()  # noqa: E731
    on_grid = Sampler("ddim", clip_max_step=-1, timesteps=tuple(distill.grid))
    student2 = end(on_grid, student)
    teacher2 = min(rms(end(on_grid, teacher), exact),  # the teacher's best 2-step grid
                   rms(end(Sampler("ddim", steps=2, clip_max_step=-1), teacher), exact))
    assert rms(student2, exact) < teacher2 / 3, (rms(student2, exact), teacher2)
    assert rms(student2, end(Sampler("ddim", steps=32, clip_max_step=-1), teacher)) \
        < teacher2 / 3


def sample_from(wm: DiffusionWorldModel, starts: torch.Tensor, actions: torch.Tensor,
                sampler: Sampler, student: bool = False, hook=None) -> torch.Tensor:
    return wm.sample(starts, sampler, actions=actions, student=student, hook=hook,
                     generator=torch.Generator().manual_seed(7)).states


@pytest.fixture(scope="module")
def distilled(world_model_factory: Factory, linear_buffer: ReplayBuffer
              ) -> tuple[DiffusionWorldModel, list[float]]:
    """A world model trained 400 steps on the linear system, then its 2-step student
    distilled from an 8-step DDIM teacher for 400 steps (~10 s), with the distillation
    losses."""
    torch.manual_seed(0)
    wm = world_model_factory(horizon=5, num_steps=32, width=128, depth=2, batch_size=128,
                             lr=1e-3, student_steps=2, student_teacher_steps=8)
    rng = np.random.default_rng(0)
    for _ in range(400):
        wm.train_step(linear_buffer.sample_segments(128, 5, rng))
    wm.init_student()
    gen = torch.Generator().manual_seed(0)
    losses = [wm.distill_step(linear_buffer.sample_segments(128, 5, rng), gen)
              for _ in range(400)]
    return wm, losses


def test_world_model_student_learns_and_keeps_the_dynamics(distilled, linear_buffer) -> None:
    """Inside the world model, the distillation loss falls, and the 2-step student's dynamics
    error on the linear system is within a small margin of the 8-step teacher's."""
    wm, losses = distilled
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:50])
    seg = linear_buffer.sample_segments(256, 5, np.random.default_rng(1), pad=False)
    starts, actions = torch.as_tensor(seg.states[:, 0]), torch.as_tensor(seg.actions)
    teacher8 = sample_from(wm, starts, actions, wm.default_sampler("ddim", 8))
    student2 = sample_from(wm, starts, actions, wm.student_sampler(), student=True)
    std, truth = wm.state_norm.std.float(), torch.as_tensor(seg.states)

    def error(a: torch.Tensor) -> float:
        return (((a - truth) / std) ** 2)[:, 1:].mean().item()

    assert error(student2) < 1.5 * error(teacher8) + 0.01, (error(student2), error(teacher8))


def test_actions_set_by_a_hook_steer_the_student(distilled, linear_buffer: ReplayBuffer
                                                  ) -> None:
    """Policy guidance's mechanism on the student: the actions start as noise and a hook sets
    them at every step (here to the segment's real actions); the student's states then follow
    the real dynamics under those actions about as well as the 8-step teacher's do, and far
    better than under the noise they started from."""
    wm, _ = distilled
    seg = linear_buffer.sample_segments(256, 5, np.random.default_rng(2), pad=False)
    starts, actions = torch.as_tensor(seg.states[:, 0]), torch.as_tensor(seg.actions)
    wanted = wm.action_norm.normalize(actions)

    def set_actions(state: StepState) -> None:
        state.cond = wanted

    def error(sampler: Sampler, student: bool, hook=None) -> float:
        out = wm.sample(starts, sampler, hook=hook, student=student,
                        generator=torch.Generator().manual_seed(3))
        err = (out.states - torch.as_tensor(seg.states)) / wm.state_norm.std.float()
        return err[:, 1:].pow(2).mean().item()

    student = error(wm.student_sampler(), True, set_actions)
    teacher8 = error(wm.default_sampler("ddim", 8), False, set_actions)
    unsteered = error(wm.student_sampler(), True)
    assert student < 1.5 * teacher8 + 0.01, (student, teacher8)
    assert student < 0.2 * unsteered, (student, unsteered)


def test_student_is_saved_and_loaded(distilled, tmp_path: Path) -> None:
    distilled, _ = distilled
    distilled.save(tmp_path / "wm.safetensors")
    loaded = DiffusionWorldModel.load(tmp_path / "wm.safetensors")
    for p, q in zip(distilled.student.parameters(), loaded.student.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    starts, actions = torch.zeros(4, 3), torch.zeros(4, 5, 2)
    torch.testing.assert_close(
        sample_from(loaded, starts, actions, loaded.student_sampler(), student=True),
        sample_from(distilled, starts, actions, distilled.student_sampler(), student=True))


def test_no_student_is_refused(world_model_factory: Factory) -> None:
    wm = world_model_factory()
    with pytest.raises(ValueError, match="no student"):
        wm.sample(torch.zeros(2, 3), Sampler("ddim", 2), student=True)
    with pytest.raises(ValueError, match="no student"):
        wm.init_student()


@pytest.mark.parametrize(("fields", "message"), [
    ({"student_steps": 3, "student_teacher_steps": 8}, "multiple of student_steps"),
    ({"student_steps": 2, "student_teacher_steps": 256}, "exceeds"),
    ({"student_steps": 2, "advantage_conditioning": True}, "advantage conditioning"),
    ({"student_steps": -1}, "non-negative"),
    ({"student_steps": 2, "prediction": "eps"}, "x0 prediction"),
    ({"student_steps": 2, "student_update_every": 0}, "student_update_every must be positive"),
])
def test_bad_student_settings_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DiffusionConfig(**fields)


def test_training_run_with_a_student_imagines_with_it(tmp_path: Path) -> None:
    """A tiny agent run with student_steps = 1: imagination samples with the student in one
    step, the distillation loss is logged and finite, and the student's optimizer is in the
    checkpoint (the resume tests cover continuing such a run bit for bit)."""
    tiny = PRESETS["tiny"]
    cfg = dataclasses.replace(tiny, diffusion=dataclasses.replace(
        tiny.diffusion, student_steps=1, student_teacher_steps=4), checkpoint_every=300)
    agent = AGDMBRL("InvertedPendulum-v5", cfg, run_dir=tmp_path / "run").learn(300)
    assert agent.world_model.imagination.use_student
    assert agent.world_model.imagination.sampler.grid(cfg.diffusion.num_steps) == [7]
    assert "student" in agent.optimizers()
    with open(tmp_path / "run" / "train_metrics.csv") as f:
        losses = [float(r["student_loss"]) for r in csv.DictReader(f)]
    assert losses and all(np.isfinite(losses))


def test_student_is_distilled_every_nth_world_model_step(world_model_factory: Factory,
                                                         linear_buffer: ReplayBuffer) -> None:
    """With student_update_every = 3, the student changes at world-model steps 0, 3, 6 only."""
    torch.manual_seed(0)
    wm = world_model_factory(student_steps=2, student_teacher_steps=4, student_update_every=3)
    rng = np.random.default_rng(0)
    changed = []
    for _ in range(7):
        before = [p.detach().clone() for p in wm.student.parameters()]
        wm.train_step(linear_buffer.sample_segments(32, 5, rng))
        changed.append(any(not torch.equal(a, b) for a, b in zip(
            before, wm.student.parameters(), strict=True)))
    assert changed == [True, False, False, True, False, False, True]
