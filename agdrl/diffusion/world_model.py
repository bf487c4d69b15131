"""The trajectory diffusion world model (DESIGN §2.2).

The diffused variable per step is x_t = [s_t, r_t, d_t] (all normalized; terminals mapped to
±1); the actions a_t are conditioning inputs, not diffused (PolyGRAD's layout), so that policy
guidance can set them. The first state s_0 is always pinned to a real state by inpainting.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agdrl.buffer import SegmentBatch
from agdrl.checkpoint import load_weights, read_meta, save_module
from agdrl.config import DiffusionConfig, SamplerKind, TimestepSpacing, config_from_dict
from agdrl.diffusion.denoisers import make_denoiser
from agdrl.diffusion.distillation import StudentDistillation
from agdrl.diffusion.process import GaussianDiffusion, Inpainting
from agdrl.diffusion.samplers import DenoisingHook, Sampler
from agdrl.distributed import average_gradients, data_parallel
from agdrl.ema import EMA
from agdrl.faults import check_finite
from agdrl.normalization import RunningNormalizer
from agdrl.rng import rand, randn
from agdrl.segments import Segment


class DiffusionWorldModel(nn.Module):
    """Generates whole segments of H steps from a real start state."""

    def __init__(self, obs_dim: int, action_dim: int, cfg: DiffusionConfig,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.cfg = cfg
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.x_dim = obs_dim + 2
        self.cond_dim = action_dim
        self.state_norm = RunningNormalizer(obs_dim)
        self.action_norm = RunningNormalizer(action_dim)
        self.reward_norm = RunningNormalizer(1)
        denoiser = self.denoiser(obs_dim, action_dim, cfg)
        tau = 1.0 if cfg.schedule_tau is None else cfg.schedule_tau
        self.diffusion = GaussianDiffusion(denoiser, cfg.num_steps, cfg.schedule, tau,
                                           cfg.prediction, cfg.x0_bound)
        self.ema = EMA(denoiser, cfg.ema_decay)
        # The few-step student (None without one): same architecture, same initial weights.
        self.student = copy.deepcopy(denoiser) if cfg.student_steps else None
        self.to(device)
        self.device = torch.device(device)
        self.optimizer = torch.optim.AdamW(denoiser.parameters(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay)
        self.student_optimizer, self.distillation = None, None
        if self.student is not None:
            self.student_optimizer = torch.optim.AdamW(self.student.parameters(), lr=cfg.lr,
                                                       weight_decay=cfg.weight_decay)
            self.distillation = StudentDistillation(self.diffusion, cfg.student_steps,
                                                    cfg.student_teacher_steps,
                                                    cfg.student_teacher_sampler)
        self.train_steps = 0
        self.last_student_loss = math.nan

    @staticmethod
    def denoiser(obs_dim: int, action_dim: int, cfg: DiffusionConfig) -> nn.Module:
        """The denoiser of this model (built on the default device: the meta device counts
        its parameters without allocating them)."""
        return make_denoiser(cfg.denoiser, cfg.horizon, obs_dim + 2, action_dim, cfg.num_steps,
                             labelled=cfg.advantage_conditioning)

    # ------------------------------------------------------------------ layout
    @property
    def reward_index(self) -> int:
        return self.x_dim - 2

    def update_normalizers(self, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray
                           ) -> None:
        """Fold new real data (any leading shape) into the running statistics."""
        self.state_norm.update(states)
        self.action_norm.update(actions)
        self.reward_norm.update(np.asarray(rewards)[..., None])

    def encode(self, seg: Segment) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment (raw units) -> (x: (B, H, Dx), cond: (B, H, da)), normalized."""
        s = self.state_norm.normalize(seg.states)
        a = self.action_norm.normalize(seg.actions)
        r = self.reward_norm.normalize(seg.rewards[..., None])
        d = seg.terminals[..., None] * 2 - 1
        return torch.cat([s, r, d], -1), a

    def decode(self, x: torch.Tensor, cond: torch.Tensor) -> Segment:
        """Inverse of :meth:`encode`; terminals come back as (d + 1) / 2 clamped to [0, 1]."""
        states = self.state_norm.unnormalize(x[..., : self.obs_dim])
        actions = self.action_norm.unnormalize(cond)
        rewards = self.reward_norm.unnormalize(x[..., self.reward_index : self.reward_index + 1])
        terminals = ((x[..., -1] + 1) / 2).clamp(0, 1)
        return Segment(states, actions, rewards[..., 0], terminals)

    def pin_start(self, s0_norm: torch.Tensor) -> Inpainting:
        """Inpainting that fixes s_0: (B, ds) in segments of shape (B, H, Dx)."""
        batch, h = s0_norm.shape[0], self.cfg.horizon
        mask = torch.zeros(batch, h, self.x_dim, dtype=torch.bool, device=s0_norm.device)
        values = torch.zeros(batch, h, self.x_dim, device=s0_norm.device)
        mask[:, 0, : self.obs_dim] = True
        values[:, 0, : self.obs_dim] = s0_norm
        return Inpainting(mask, values)

    # ------------------------------------------------------------------ training
    def train_step(self, batch: SegmentBatch, generator: torch.Generator | None = None,
                   labels: torch.Tensor | None = None) -> float:
        """One gradient step of the denoising objective on a batch of real segments; a
        non-finite loss or gradient raises :class:`NonFiniteError` before any weight changes.

        labels: (B,) segment labels for an advantage-conditioned model (a random
        ``condition_dropout`` fraction is dropped; None drops all), None otherwise.
        """
        x0, cond, weight, pin = self._training_inputs(batch, generator)
        label = None
        if self.cfg.advantage_conditioning:
            label = torch.full((x0.shape[0],), float("nan"), device=self.device)
            if labels is not None:
                keep = rand((x0.shape[0],), generator, self.device) >= self.cfg.condition_dropout
                label = torch.where(keep, labels.to(self.device, torch.float32), label)
        elif labels is not None:
            raise ValueError("labels given to a model built without advantage_conditioning")
        self.diffusion.train()
        loss = self.diffusion.loss(x0, cond, weight, pin, generator, label,
                                   denoiser=data_parallel(self.diffusion.denoiser))
        check_finite("the diffusion loss", loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(self.diffusion.denoiser.parameters(),
                                        self.cfg.grad_clip or float("inf"))
        check_finite("the diffusion gradient", norm)
        student_loss = None
        if self.student is not None and self.train_steps % self.cfg.student_update_every == 0:
            student_loss = self._student_gradient(x0, cond, weight, pin, generator)
        self.optimizer.step()  # only now, when every loss and gradient is known to be finite
        self.ema.update(self.diffusion.denoiser)
        if student_loss is not None:
            self.student_optimizer.step()
            self.last_student_loss = student_loss
        self.train_steps += 1
        return float(loss.detach())

    def _training_inputs(self, batch: SegmentBatch, generator: torch.Generator | None
                         ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, Inpainting]:
        """Encoded segments x0: (B, H, Dx), cond, loss weights (B, H, Dx) and pins of a batch."""
        seg = Segment.from_numpy(batch.states, batch.actions, batch.rewards, batch.terminals,
                                 self.device)
        x0, cond = self.encode(seg)
        # every channel on real steps, and the states also on the state after the last one
        # (without it the model never sees what a terminal transition leads to)
        mask = torch.as_tensor(batch.mask, device=self.device)[..., None].expand_as(x0).clone()
        mask[..., : self.obs_dim] = torch.as_tensor(batch.state_mask, device=self.device)[..., None]
        pin = self.pin_start(x0[:, 0, : self.obs_dim])
        weight = mask * (~pin.mask)  # nothing to learn where pinned
        return x0, cond, weight, pin

    def distill_step(self, batch: SegmentBatch, generator: torch.Generator | None = None
                     ) -> float:
        """One gradient step of the student alone toward the EMA teacher's chain on a batch of
        real segments (distilling a trained model; :meth:`train_step` does one after each
        teacher step). Returns the distillation loss."""
        self._require_student()
        loss = self._student_gradient(*self._training_inputs(batch, generator), generator)
        self.student_optimizer.step()
        self.last_student_loss = loss
        return loss

    def _student_gradient(self, x0: torch.Tensor, cond: torch.Tensor | None,
                          weight: torch.Tensor, pin: Inpainting,
                          generator: torch.Generator | None) -> float:
        """The distillation loss, with the student's gradient in place (averaged over ranks
        when distributed, clipped, checked finite) and no step taken. Returns the loss."""
        self.student.train()
        loss = self.distillation.loss(self.student, self.ema.model, x0, cond, weight, pin,
                                      generator)
        check_finite("the distillation loss", loss)
        self.student_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.student.parameters())
        norm = nn.utils.clip_grad_norm_(self.student.parameters(),
                                        self.cfg.grad_clip or float("inf"))
        check_finite("the distillation gradient", norm)
        return float(loss.detach())

    def _require_student(self) -> None:
        if self.student is None:
            raise ValueError("this world model has no student (set student_steps > 0)")

    def init_student(self) -> None:
        """Start the student from the EMA teacher's weights (distilling a trained model)."""
        self._require_student()
        self.student.load_state_dict(self.ema.model.state_dict())

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, s0: torch.Tensor, sampler: Sampler, actions: torch.Tensor | None = None,
               hook: DenoisingHook | None = None, generator: torch.Generator | None = None,
               use_ema: bool = True,
               wrap_denoiser: Callable[[nn.Module], nn.Module] | None = None,
               student: bool = False) -> Segment:
        """Imagine segments from start states.

        s0: (B, ds) raw start states; actions: (B, H, da) raw actions to condition on, or None
        to start them from N(0, I) in normalized space (a hook such as policy guidance then
        shapes them; without a hook they stay noise). ``wrap_denoiser`` replaces the network
        by a wrapper around it (classifier-free guidance); ``student`` samples with the
        distilled student (use :meth:`student_sampler`; the sampler's settle steps, at index 0,
        call the teacher). Returns a raw-unit :class:`Segment`.
        """
        b, h = s0.shape[0], self.cfg.horizon
        s0_norm = self.state_norm.normalize(torch.as_tensor(s0, dtype=torch.float32,
                                                            device=self.device))
        a_norm = None if actions is None else self.action_norm.normalize(
            torch.as_tensor(actions, dtype=torch.float32, device=self.device))
        if a_norm is not None and a_norm.shape != (b, h, self.action_dim):
            raise ValueError(f"actions must have shape {(b, h, self.action_dim)}, "
                             f"got {tuple(a_norm.shape)}")
        cond = a_norm if a_norm is not None else randn((b, h, self.action_dim), generator,
                                                       self.device)
        pin = self.pin_start(s0_norm)
        if student:
            self._require_student()
        teacher = self.ema.model if use_ema else self.diffusion.denoiser
        denoiser = self.student if student else teacher
        for network in (denoiser, teacher):
            if network.training:  # eval() walks every submodule: not on every call
                network.eval()
        if wrap_denoiser is not None:
            denoiser, teacher = wrap_denoiser(denoiser), wrap_denoiser(teacher)
        x, cond = sampler.sample(self.diffusion, (b, h, self.x_dim), cond=cond, inpainting=pin,
                                 hook=hook, denoiser=denoiser, generator=generator,
                                 device=self.device, settle_denoiser=teacher)
        return self.decode(x, cond)

    def default_sampler(self, kind: SamplerKind = "ddpm", steps: int | None = None,
                        eta: float = 0.0, spacing: TimestepSpacing = "linspace") -> Sampler:
        """A sampler of ``kind`` (all K steps unless ``steps``, spaced by ``spacing``) with
        the config's near-end clip."""
        return Sampler(kind=kind, steps=steps or self.cfg.num_steps, eta=eta, spacing=spacing,
                       clip_max_step=self.cfg.clip_max_step, clip_value=self.cfg.clip_value)

    def student_sampler(self) -> Sampler:
        """The student's sampler: DDIM on its grid (every m-th index of its teacher's),
        without the near-end clip, like the teacher chains its targets come from."""
        self._require_student()
        return dataclasses.replace(self.default_sampler("ddim", self.cfg.student_steps),
                                   timesteps=tuple(self.distillation.grid), clip_max_step=-1)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Weights (incl. EMA and normalizers) as safetensors with the config in its header."""
        save_module(self, path, {"kind": "diffusion_world_model", "obs_dim": self.obs_dim,
                                 "action_dim": self.action_dim, "train_steps": self.train_steps,
                                 "config": dataclasses.asdict(self.cfg)})

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> DiffusionWorldModel:
        """Load a model written by :meth:`save` (safetensors: no code is executed)."""
        meta = read_meta(path, "diffusion_world_model")
        cfg = config_from_dict(DiffusionConfig, meta["config"])
        model = cls(meta["obs_dim"], meta["action_dim"], cfg, device)
        load_weights(model, path, device)
        model.train_steps = meta["train_steps"]
        return model
