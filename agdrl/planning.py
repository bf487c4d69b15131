"""Decision-time planning with the world model and the agent's critic.

At each real step the planner imagines N candidate trajectories of H actions from the current
state and scores each by its imagined return plus the critic's discounted value of the state
it reaches,

    G = Σ_{t<H} γ^t c_t r̂_t + γ^H c_H V(ŝ_H),   c_0 = 1, c_{t+1} = c_t (1 − d̂_t),

with d̂_t the predicted probability that step t ends the episode. The first iteration's
candidates follow the policy (policy guidance in the diffusion model, optionally with the
run's advantage guidance; policy samples in the ensemble) and, warm-started, one replays the
previous step's plan shifted by one. Further iterations refine MPPI-style: a Gaussian over
the pre-squash action sequence, fitted to the elites with weights
w ∝ exp((G − max G) / (τ · std G)), proposes the next N open-loop sequences, whose outcome the
world model predicts. The planner acts with the first action of the best candidate seen, or
the weighted mean first action of the last elites (MPPI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypedDict

import numpy as np
import torch

from agdrl.a2c import ActorCriticAgent
from agdrl.config import ConfigError, PlannerConfig
from agdrl.guidance import ValueFn
from agdrl.rng import randn
from agdrl.segments import Segment
from agdrl.world_models import WorldModel


def plan_returns(seg: Segment, steps: int, value: ValueFn, gamma: float) -> torch.Tensor:
    """G of each candidate (see the module docstring): seg (B, ≥ steps + 1) raw -> (B,)."""
    ends = seg.terminals[:, :steps].clamp(0.0, 1.0)
    alive = torch.cumprod(torch.cat([torch.ones_like(ends[:, :1]), 1.0 - ends], 1), 1)
    discount = gamma ** torch.arange(steps + 1, device=ends.device, dtype=ends.dtype)
    imagined = (discount[:steps] * alive[:, :steps] * seg.rewards[:, :steps]).sum(1)
    return imagined + discount[steps] * alive[:, steps] * value(seg.states[:, steps])


def elite_weights(scores: torch.Tensor, elites: int, temperature: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``elites`` best scores and their normalized weights
    exp((G − max G) / (τ · std G)) (equal weights when the elites tie)."""
    best, index = scores.topk(elites)
    spread = best.std() if elites > 1 else best.new_tensor(0.0)
    if not torch.isfinite(spread) or spread <= 0:
        return index, torch.full_like(best, 1.0 / elites)
    return index, torch.softmax((best - best.max()) / (temperature * spread), 0)


class PlannerState(TypedDict):
    planner_plan: list[list[float]] | None  # (H, da) raw actions


class Planner:
    """Plans one action per call (:meth:`__call__`) for one environment; :meth:`reset` at an
    episode's start forgets the warm start. ``plan`` is the chosen sequence (H, da): the best
    candidate's, or with ``select='mean'`` the elites' weighted mean (in pre-squash space), of
    which the first action is taken. ``last`` holds the last decision's diagnostics.

    >>> planner = Planner(agent.world_model, agent.agent, PlannerConfig(), generator)
    >>> action = planner(obs)
    """

    STATE: ClassVar[type] = PlannerState

    def __init__(self, world_model: WorldModel, agent: ActorCriticAgent, cfg: PlannerConfig,
                 generator: torch.Generator):
        span = world_model.segment_steps
        if span is not None and not cfg.chain and cfg.horizon > span:
            raise ConfigError(f"planner.horizon {cfg.horizon} is longer than one world-model "
                              f"segment ({span} steps) and planner.chain is off: choose a "
                              f"horizon ≤ {span}, or chain segments")
        if getattr(agent, "critic", None) is None:
            raise ConfigError("the planner bootstraps with the agent's critic, and this agent "
                              "has none")
        self.world_model, self.agent, self.cfg, self.generator = (world_model, agent, cfg,
                                                                  generator)
        self.device = agent.device
        self.plan: torch.Tensor | None = None  # (H, da) raw: the last chosen plan
        self.last: dict[str, float] = {}

    def write_state(self, folder: Path) -> dict[str, Any]:
        """The warm start, for a checkpoint of a run that acts with the planner."""
        return {"planner_plan": None if self.plan is None else self.plan.tolist()}

    def read_state(self, folder: Path, state: dict[str, Any]) -> None:
        plan = state["planner_plan"]
        self.plan = None if plan is None else torch.tensor(plan, dtype=torch.float32,
                                                           device=self.device)

    def reset(self) -> None:
        """Forget the warm start (call at an episode's start)."""
        self.plan = None

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """obs: (ds,) raw observation -> the action to take (da,)."""
        cfg, actor = self.cfg, self.agent.actor
        start = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
        starts = start.expand(cfg.candidates, -1)
        warm = None
        if cfg.warm_start and self.plan is not None:
            warm = torch.cat([self.plan[1:], self.plan[-1:]])[None]
        with torch.no_grad():
            best_score, best_plan, chosen, proposals = -torch.inf, None, (0, 0), warm
            for iteration in range(cfg.iterations):
                seg = self.world_model.rollout(starts, cfg.horizon, self.generator, proposals,
                                               cfg.guided, cfg.denoising_steps)
                scores = plan_returns(seg, cfg.horizon, self.agent.critic, self.agent.cfg.gamma)
                scores = torch.nan_to_num(scores, nan=-torch.inf)
                top = int(scores.argmax())
                if scores[top] > best_score:
                    best_score, best_plan = scores[top], seg.actions[top, : cfg.horizon]
                    chosen = (iteration, top)
                index, weights = elite_weights(scores, cfg.elites, cfg.temperature)
                u = actor.unsquash(seg.actions[index, : cfg.horizon])
                if iteration + 1 < cfg.iterations:
                    proposals = self._proposals(u, weights)
        if best_plan is None:
            raise ValueError("every planned candidate scored NaN or −inf (a non-finite world "
                             "model or critic)")
        self.plan = (best_plan if cfg.select == "best"
                     else actor.squash((weights[:, None, None] * u).sum(0)))
        self.last = {"best_score": float(best_score), "mean_score": float(scores.mean()),
                     "best_iteration": chosen[0],
                     "warm_start_chosen": float(warm is not None and chosen == (0, 0))}
        return self.plan[0].cpu().numpy()

    def _proposals(self, u: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """N open-loop action sequences (N, H, da) raw from the Gaussian fitted to the
        elites' pre-squash sequences u (E, H, da) with ``weights`` (E,)."""
        w = weights[:, None, None]
        mean = (w * u).sum(0)
        std = ((w * (u - mean) ** 2).sum(0)).sqrt().clamp(min=self.cfg.min_std)
        noise = randn((self.cfg.candidates, *mean.shape), self.generator, mean.device)
        return self.agent.actor.squash(mean + std * noise)
