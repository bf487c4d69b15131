"""Imagination: guided segments from real start states (diffusion world model), or policy
rollouts of the autoregressive ensemble (the classic-MBRL row), with per-batch diagnostics."""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from agdrl.a2c import ActorCriticAgent
from agdrl.config import ImaginationConfig
from agdrl.cuda_graph import CapturedChain
from agdrl.diffusion.samplers import StepState, compose
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.ensemble import ProbabilisticEnsemble
from agdrl.guidance import (
    ActionGuidance,
    AdvantageEstimator,
    AdvantageResampling,
    ClassifierFreeGuidance,
    ExponentialAdvantage,
    OneStepAdvantage,
    PolicyGuidance,
    QMinusV,
    RewardSum,
    SegmentAdvantage,
    SegmentGAE,
    SigmoidAdvantage,
    StateGuidance,
)
from agdrl.reward_model import RewardModel
from agdrl.segments import Segment
from agdrl.termination import TerminationModel


class Imagination:
    """Samples on-policy segments (policy guidance) with optional state guidance (SAG, EAG,
    reward) or classifier-free advantage guidance; the segments' rewards and terminal flags
    come from the diffusion model's channels or, as ``cfg`` says, from models of single real
    transitions (``reward_model``, ``termination``).

    The critic seen by SAG/EAG is the agent's current critic; its γ is the agent's.
    ``guidance_seconds`` accumulates the time spent inside the guidance hooks: wall-clock on
    the CPU; on CUDA the device's time between CUDA events around each hook call (the hooks
    only enqueue kernels, so a host clock would count launches; a synchronize per step would
    stall the chain), read when ``guidance_seconds`` is. A chain replayed from a CUDA graph
    (``cfg.cuda_graph``) is not split: its guidance counts as sampling.
    """

    def __init__(self, model: DiffusionWorldModel, agent: ActorCriticAgent,
                 cfg: ImaginationConfig, reward_model: RewardModel | None = None,
                 termination: TerminationModel | None = None):
        self.model, self.agent, self.cfg = model, agent, cfg
        if (cfg.experimental.termination == "classifier") != (termination is not None):
            raise ValueError("termination 'classifier' needs a TerminationModel, and only it "
                             "takes one")
        regressor = cfg.experimental.reward == "regressor"
        if (cfg.guidance == "reward" or regressor) != (reward_model is not None):
            raise ValueError("reward guidance and reward 'regressor' need a RewardModel, and "
                             "only they take one")
        self.termination, self.reward_model = termination, reward_model
        self.guidance_seconds = 0.0
        self.policy = PolicyGuidance(model, agent.actor, cfg.policy_delta,
                                     mode=cfg.policy_guidance,
                                     relaxation=cfg.policy_relaxation)
        objectives = {"sag": lambda: SigmoidAdvantage(self._advantage_estimator()),
                      "eag": lambda: ExponentialAdvantage(self._advantage_estimator()),
                      "reward": lambda: RewardSum(reward_model)}
        self.state = self.resampling = None
        if cfg.guidance in objectives and cfg.guidance_mode == "resample":
            score = (RewardSum(reward_model) if cfg.guidance == "reward" else
                     SegmentAdvantage(self._advantage_estimator(), agent.cfg.gamma))
            self.resampling = AdvantageResampling(  # it scores what the agent learns from
                lambda seg: score(self.relabel(seg)), "sag" if cfg.guidance == "sag" else "eag",
                cfg.resample_candidates, cfg.guidance_scale)
        elif cfg.guidance in objectives:
            objective = objectives[cfg.guidance]()
            top = cfg.experimental.guidance_max_step
            args = (model, lambda seg: objective(self.relabel(seg)),  # what the agent learns from
                    cfg.guidance_scale, cfg.guidance_mode, None if top < 0 else top,
                    cfg.guide_last_state, cfg.experimental.steered_fraction)
            if not cfg.experimental.guide_actions:
                self.state = StateGuidance(*args)
            elif model.student is not None:
                raise ValueError("guide_actions differentiates the EMA denoiser, not a "
                                 "distilled student: use a model without one")
            else:
                self.state = ActionGuidance(*args, policy=self.policy, denoiser=model.ema.model)
        self.wrap = None
        if cfg.guidance == "cfg":
            if not model.cfg.advantage_conditioning:
                raise ValueError("classifier-free guidance needs a world model trained with "
                                 "advantage_conditioning")
            self.wrap = lambda denoiser: ClassifierFreeGuidance(denoiser, cfg.cfg_target,
                                                                cfg.cfg_weight)
        self.hooks = (compose(self.state, self.policy) if cfg.experimental.guide_states_first
                      else compose(self.policy, self.state))
        self.captured = None
        if cfg.cuda_graph:
            if torch.device(model.device).type != "cuda":
                raise ValueError(f"cuda_graph captures the chain on a CUDA device; the world "
                                 f"model is on {model.device}")
            hooks = [(hook, name) for hook in (self.policy, self.state) if hook is not None
                     for name in hook.chain_tensors]
            modules = [m for m in (model, agent, reward_model, termination) if m is not None]
            self.captured = CapturedChain(self._chain, modules, hooks)
        self.use_student = model.student is not None
        self.sampler = dataclasses.replace(
            model.student_sampler() if self.use_student
            else model.default_sampler(cfg.sampler, cfg.sampler_steps or None,
                                       spacing=cfg.sampler_spacing),
            settle_steps=cfg.settle_steps if cfg.policy_guidance == "sample" else 0)

    def _chain(self, start_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The chain that ``cfg.cuda_graph`` captures: untimed hooks (CUDA events cannot time
        parts of a graph) and the device's default generator (:mod:`agdrl.cuda_graph`).
        start_states: (B, ds) on the model's device -> the Segment's four tensors."""
        seg = self.model.sample(start_states, self.sampler, hook=self.hooks,
                                wrap_denoiser=self.wrap, student=self.use_student)
        return seg.states, seg.actions, seg.rewards, seg.terminals

    def relabel(self, seg: Segment) -> Segment:
        """``seg`` with its rewards and terminal flags from the transition models that ``cfg``
        names instead of the diffusion model's channels (differentiable in the states)."""
        if self.cfg.experimental.reward == "regressor":
            seg = self.reward_model.relabel(seg)
        if self.termination is not None:
            seg = self.termination.relabel(seg)
        return seg

    def _advantage_estimator(self) -> AdvantageEstimator:
        agent, name = self.agent, self.cfg.advantage
        if name == "td":
            return OneStepAdvantage(agent.critic, agent.cfg.gamma)
        if name == "gae":
            return SegmentGAE(agent.critic, agent.cfg.gamma, agent.cfg.lam)
        if agent.q_critic is None:
            raise ValueError("the Q − V advantage needs an agent built with learn_q=True")
        return QMinusV(agent.q_critic, agent.critic)

    @property
    def guidance_seconds(self) -> float:
        self._collect_events()
        return self._guidance_seconds

    @guidance_seconds.setter
    def guidance_seconds(self, seconds: float) -> None:
        self._guidance_seconds = seconds
        self._pending_events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def _collect_events(self) -> None:
        """Add the device time between the recorded CUDA events (waiting for the last)."""
        if self._pending_events:
            self._pending_events[-1][1].synchronize()
            self._guidance_seconds += sum(start.elapsed_time(end) for start, end
                                          in self._pending_events) / 1000.0
            self._pending_events.clear()

    def _timed_hooks(self, state: StepState) -> None:
        if state.x_k.is_cuda:
            stream = torch.cuda.current_stream(state.x_k.device)
            start, end = (torch.cuda.Event(enable_timing=True),
                          torch.cuda.Event(enable_timing=True))
            start.record(stream)
            self.hooks(state)
            end.record(stream)
            self._pending_events.append((start, end))
            return
        start_s = time.perf_counter()
        self.hooks(state)
        self._guidance_seconds += time.perf_counter() - start_s

    def _segment(self, start_states: torch.Tensor, generator: torch.Generator | None
                 ) -> Segment:
        """One guided segment (B, H) from (B, ds) raw start states (with 'resample' guidance,
        the kept one of N candidates per start)."""
        if self.resampling is not None:
            start_states = start_states.repeat_interleave(self.resampling.candidates, 0)
        if self.captured is None:
            seg = self.model.sample(start_states, self.sampler, hook=self._timed_hooks,
                                    generator=generator, wrap_denoiser=self.wrap,
                                    student=self.use_student)
        else:
            seg = Segment(*self.captured(torch.as_tensor(start_states, dtype=torch.float32)
                                         .to(self.model.device)))
            if self.state is not None:
                self.state.raise_if_nonfinite()
        self.policy.adapt()
        return seg if self.resampling is None else self.resampling(seg, generator)

    def __call__(self, start_states: torch.Tensor, generator: torch.Generator | None = None
                 ) -> tuple[Segment, dict[str, float]]:
        """start_states: (B, ds) raw real states -> imagined Segment (B, L) with
        L = segments · (H − 1) + 1 (chained segments, each after the first starting from the
        previous one's last imagined state), and diagnostics:
        standardized action spread, policy-guidance δ, state-guidance gradient RMS and
        objective, mean one-step advantage, predicted reward and value. ``generator`` draws
        the chain's noise, except in a chain captured by ``cfg.cuda_graph``, which draws from
        the device's default generator."""
        pieces = []
        for _ in range(self.cfg.segments):
            seg = self._segment(start_states, generator)
            pieces.append(seg)
            start_states = seg.states[:, -1].detach()
        seg = chain_segments(pieces)
        with torch.no_grad():
            if self.cfg.experimental.resample_actions:
                seg = Segment(seg.states, self.policy.on_policy_actions(seg.states)
                              .to(seg.actions.dtype), seg.rewards, seg.terminals)
            seg = self.relabel(seg)
            if self.state is not None and self.state.steered_fraction < 1.0:
                seg = dataclasses.replace(
                    seg, steered=self.state.steered_rows(len(seg.states), seg.states.device))
            metrics = {"action_spread": self.policy.last_spread,
                       "policy_delta": math.exp(self.policy.log_delta),
                       **segment_metrics(seg, self.agent)}
        if self.resampling is not None:
            metrics["resample_ess"] = self.resampling.last_ess
        if self.state is not None:
            metrics["guidance_grad_rms"] = self.state.last_grad_rms
            metrics["guidance_objective"] = self.state.last_objective
        self._collect_events()  # the metrics' reads have waited for the chain already
        return seg, metrics


def chain_segments(pieces: list[Segment]) -> Segment:
    """Join segments that each start at the previous one's last state: every piece but the
    last gives its first H − 1 steps (its last step's action, reward and terminal flag are
    replaced by the next piece's first, which generated what follows that state).
    pieces: C segments (B, H) -> (B, C (H − 1) + 1)."""
    if len(pieces) == 1:
        return pieces[0]
    parts = [(p.states, p.actions, p.rewards, p.terminals) for p in pieces]
    return Segment(*(torch.cat([p[i][:, :-1] for p in parts[:-1]] + [parts[-1][i]], 1)
                     for i in range(4)))


def segment_metrics(seg: Segment, agent: ActorCriticAgent) -> dict[str, float]:
    """Mean one-step advantage, predicted reward and value of an imagined batch, and the RMS
    of its standardized actions z = (atanh(a_t) − μ(s_t)) / σ(s_t) at its own states
    (t < H − 1) over the rows the actor learns from (``action_z_rms``): about 1 when they are
    samples of π there. A batch with steered rows also reports their RMS apart
    (``steered_action_z_rms``), so the distance guidance moves the actions is not averaged
    with the rows it leaves alone."""
    with torch.no_grad():
        mean, std = agent.actor(seg.states[:, :-1])
        z_sq = ((agent.actor.unsquash(seg.actions[:, :-1]) - mean) / std).pow(2)
        metrics = {"mean_advantage": OneStepAdvantage(agent.critic, agent.cfg.gamma)(seg)
                   .mean().item(),
                   "mean_reward": seg.rewards.mean().item(),
                   "mean_value": agent.critic(seg.states).mean().item()}
        if seg.steered is None:
            metrics["action_z_rms"] = z_sq.mean().sqrt().item()
        else:
            metrics["action_z_rms"] = z_sq[~seg.steered].mean().sqrt().item()
            metrics["steered_action_z_rms"] = z_sq[seg.steered].mean().sqrt().item()
        return metrics


class EnsembleImagination:
    """The classic-MBRL row: on-policy rollouts of ``horizon`` steps in the autoregressive
    ensemble (MBPO style: a random elite per step, sampled from its Gaussian), actions drawn
    from the current policy at each predicted state. Same interface as :class:`Imagination`;
    there is no guidance to time."""

    def __init__(self, ensemble: ProbabilisticEnsemble, agent: ActorCriticAgent, horizon: int):
        self.ensemble, self.agent, self.horizon = ensemble, agent, horizon
        self.guidance_seconds = 0.0

    def __call__(self, start_states: torch.Tensor, generator: torch.Generator | None = None
                 ) -> tuple[Segment, dict[str, float]]:
        """start_states: (B, ds) raw real states -> imagined Segment (B, horizon), metrics."""
        seg = self.ensemble.rollout(start_states,
                                    lambda s: self.agent.actor.sample(s, generator),
                                    generator=generator, horizon=self.horizon)
        return seg, segment_metrics(seg, self.agent)
