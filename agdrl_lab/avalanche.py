"""The error-avalanche measurement (DESIGN §4).

Collect real data with a behaviour policy that does something, train the autoregressive
ensemble and the diffusion world model with the same number of gradient steps, then from real
start states of held-out episodes restore the simulator's exact state, replay the same actions
in the simulator and in each model, and report the normalized state MSE at every horizon h.
A diffusion model whose segment is shorter than h is chained: the last predicted state of one
segment is the pinned s_0 of the next, so each segment advances H - 1 steps.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from agdrl.buffer import ReplayBuffer
from agdrl.collect import collect, new_buffer, random_policy, train_sac_policy
from agdrl.config import (
    DenoiserConfig,
    DiffusionConfig,
    EnsembleConfig,
    for_task,
    reference_denoiser,
    require,
    require_positive,
)
from agdrl.diffusion.samplers import Sampler
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.ensemble import BootstrapSampler, ProbabilisticEnsemble
from agdrl.envs import env_id, make_env, replay_actions
from agdrl.provenance import machine_info, source_version


@dataclass(frozen=True)
class AvalancheConfig:
    """Open-loop state error vs horizon of the diffusion and autoregressive world models."""

    env: str = "Hopper-v5"
    """Gymnasium task id (needs a MuJoCo simulator state to restore start states)."""
    seed: int = 0
    """Seed of data collection, model initialization and sampling."""
    behavior: Literal["sac", "random"] = "sac"
    """Behaviour policy: a short Stable-Baselines3 SAC run (needs the sb3 extra) or random."""
    behavior_steps: int = 20_000
    """SAC training steps before collecting (ignored for 'random')."""
    action_noise: tuple[float, float] = (0.0, 0.3)
    """Per-episode Gaussian action-noise std, drawn uniformly from this range (× half range)."""
    dataset_steps: int = 50_000
    """Transitions collected for training the models."""
    test_episodes: int = 10
    """Held-out episodes (same behaviour) whose states start the open-loop replays."""
    train_steps: int = 20_000
    """Gradient steps for each world model (the same for both)."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    """Diffusion world model."""
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    """Autoregressive ensemble."""
    samplers: tuple[str, ...] = ("ddpm", "ddim:32", "ddim:16", "ddim:8", "ddim:4", "ddim:2",
                                 "ddim:1")
    """Diffusion samplers to evaluate: 'ddpm' (all K steps), 'ddpm:N' or 'ddim:N' (N steps)."""
    max_horizon: int = 50
    """Longest open-loop horizon h."""
    num_starts: int = 200
    """Start states drawn from the held-out episodes."""
    out_dir: Path = Path("runs/avalanche")
    """Where the JSON, the PNG and the models go."""
    threads: int = 0
    """torch threads (0: torch's default)."""
    device: str = "cpu"
    """torch device for the models ('cpu', 'cuda', …)."""
    reevaluate: bool = False
    """Skip collection and training: load the datasets and models that an earlier run saved in
    out_dir and measure again (its training figures are carried over)."""

    def __post_init__(self):
        require_positive(self, "dataset_steps", "train_steps", "max_horizon", "num_starts",
                         "test_episodes")
        require(self.behavior_steps >= 0 and self.threads >= 0,
                "behavior_steps and threads must be non-negative")


PRESETS: dict[str, AvalancheConfig] = {
    "demo": AvalancheConfig(
        behavior_steps=3_000, dataset_steps=10_000, test_episodes=5, train_steps=1_500,
        diffusion=DiffusionConfig(num_steps=32, denoiser=DenoiserConfig(width=256, depth=3)),
        ensemble=EnsembleConfig(width=128, depth=3), samplers=("ddpm", "ddim:8", "ddim:4"),
        num_starts=64, out_dir=Path("runs/avalanche-demo")),
    "default": AvalancheConfig(),
    "reference": AvalancheConfig(diffusion=DiffusionConfig(denoiser=reference_denoiser())),
}


def parse_sampler(spec: str, cfg: DiffusionConfig) -> Sampler:
    """'ddpm' | 'ddpm:N' | 'ddim:N' | 'ddim:N:ETA' -> Sampler (with the config's near-end clip)."""
    kind, _, rest = spec.partition(":")
    n, _, eta = rest.partition(":")
    if n and not n.isdigit():
        raise ValueError(f"sampler {spec!r}: the step count after ':' must be an integer")
    try:
        eta_value = float(eta) if eta else 0.0
    except ValueError as err:
        raise ValueError(f"sampler {spec!r}: eta must be a number") from err
    return Sampler(kind=kind, steps=int(n) if n else cfg.num_steps, eta=eta_value,
                   clip_max_step=cfg.clip_max_step, clip_value=cfg.clip_value)


@dataclass
class OpenLoopTask:
    """Start states and the simulator's ground truth for the replays.

    s0: (N, ds); actions: (N, max_h + 1, da), the recorded a_0 … a_{max_h} (past the episode's
    end the last one repeats); true_states: (N, max_h + 1, ds) with s_0 first;
    valid: (N,) number of steps before the simulator terminated (≤ max_h).
    """

    s0: np.ndarray
    actions: np.ndarray
    true_states: np.ndarray
    valid: np.ndarray
    restore_error: float


def build_open_loop_task(env: gym.Env, test: ReplayBuffer, max_h: int, num_starts: int,
                         rng: np.random.Generator) -> OpenLoopTask:
    """Pick start steps in held-out episodes and replay their actions in the simulator."""
    if test.sim_states is None:
        raise ValueError("the error-avalanche measurement needs a simulator state to restore "
                         f"start states; {env_id(env)} exposes none")
    starts = test.valid_starts(max_h, pad=False)
    if len(starts) == 0:  # short episodes (e.g. Hopper falls): accept shorter replays
        starts = np.arange(test.size)
    starts = rng.choice(starts, size=min(num_starts, len(starts)), replace=False)
    n, ds, da = len(starts), test.obs_dim, test.action_dim
    actions = np.zeros((n, max_h + 1, da), np.float32)
    truth = np.full((n, max_h + 1, ds), np.nan, np.float32)
    valid = np.zeros(n, np.int64)
    restore_error = 0.0
    for j, i in enumerate(starts):
        recorded = min(max_h + 1, test.episode_end[i] - i + 1)
        actions[j, :recorded] = test.actions[i : i + recorded]
        actions[j, recorded:] = test.actions[i + recorded - 1]
        # stop where the recorded episode stopped
        states, _, valid[j], _ = replay_actions(env, test.sim_states[i],
                                                actions[j, : min(max_h, recorded)])
        truth[j, : len(states)] = states
        restore_error = max(restore_error, float(np.abs(states[0] - test.obs[i]).max()))
    return OpenLoopTask(truth[:, 0].copy(), actions, truth, valid, restore_error)


def segment_offsets(horizon: int, max_h: int) -> list[int]:
    """Start offsets of the chained segments: every H - 1 steps, the last one moved back so that
    it ends exactly at max_h (it overlaps its predecessor and is pinned at that one's
    prediction), so no segment needs actions from beyond the replay."""
    last = max(max_h - (horizon - 1), 0)
    offsets = list(range(0, last, horizon - 1))
    return [*offsets, last]


def chained_diffusion_rollout(model: DiffusionWorldModel, sampler: Sampler, s0: torch.Tensor,
                              actions: torch.Tensor, max_h: int, generator: torch.Generator
                              ) -> torch.Tensor:
    """Predicted states (N, max_h + 1, ds) from segments of H chained at
    :func:`segment_offsets`. actions: (N, ≥ max_h, da), a_0 … (the last one repeats if
    fewer than a segment needs)."""
    h = model.cfg.horizon
    need = max_h + h
    if actions.shape[1] < need:
        actions = torch.cat([actions, actions[:, -1:].expand(-1, need - actions.shape[1], -1)], 1)
    states = torch.empty(s0.shape[0], max_h + 1, s0.shape[1], device=model.device)
    states[:, 0] = s0.to(model.device)
    for o in segment_offsets(h, max_h):
        seg = model.sample(states[:, o], sampler, actions=actions[:, o : o + h],
                           generator=generator)
        stop = min(o + h, max_h + 1)
        states[:, o + 1 : stop] = seg.states[:, 1 : stop - o]
    return states


def horizon_errors(pred: np.ndarray, task: OpenLoopTask, state_std: np.ndarray) -> dict:
    """Normalized MSE per horizon (mean over state dims), summarized over start states."""
    err = (((pred - task.true_states) / state_std) ** 2).mean(-1)  # (N, max_h + 1)
    h_idx = np.arange(err.shape[1])
    err = np.where(h_idx[None, :] <= task.valid[:, None], err, np.nan)
    summary: dict[str, list] = {k: [] for k in ("mean", "std", "median", "q25", "q75", "n")}
    for h in range(1, err.shape[1]):
        col = err[:, h][~np.isnan(err[:, h])]
        if len(col) == 0:
            for k in summary:
                summary[k].append(None)
            continue
        summary["mean"].append(float(col.mean()))
        summary["std"].append(float(col.std()))
        summary["median"].append(float(np.median(col)))
        summary["q25"].append(float(np.quantile(col, 0.25)))
        summary["q75"].append(float(np.quantile(col, 0.75)))
        summary["n"].append(len(col))
    return summary


def run_avalanche(cfg: AvalancheConfig, log: Callable[[str], None] = print) -> dict:
    """Run the whole measurement; writes ``results.json`` and ``error_vs_horizon.png``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    samplers = {spec: parse_sampler(spec, cfg.diffusion) for spec in cfg.samplers}
    out = Path(cfg.out_dir)
    torch.manual_seed(cfg.seed)
    env = make_env(cfg.env, seed=cfg.seed)
    out.mkdir(parents=True, exist_ok=True)  # only once the input has been accepted
    dcfg = for_task(cfg.diffusion, cfg.env)
    if cfg.reevaluate:
        try:
            earlier = json.loads((out / "results.json").read_text())
            train = ReplayBuffer.load(out / "train_buffer.npz")
            test = ReplayBuffer.load(out / "test_buffer.npz")
            diffusion = DiffusionWorldModel.load(out / "diffusion.safetensors", cfg.device)
            ensemble = ProbabilisticEnsemble.load(out / "ensemble.safetensors", cfg.device)
        except FileNotFoundError as err:
            raise ValueError(f"--reevaluate needs an earlier run in {out}: {err}") from err
        dcfg = diffusion.cfg
        training = {k: earlier[k] for k in ("dataset", "gradient_steps", "final_loss")}
        training["timings_s"] = {k: v for k, v in earlier["timings_s"].items()
                                 if not k.endswith("_rollout_s")}
    else:
        train, test, diffusion, ensemble, training = collect_and_train(cfg, dcfg, env, log)

    # the starts are drawn from their own seeded stream, so a re-evaluation uses the same ones
    task = build_open_loop_task(env, test, cfg.max_horizon, cfg.num_starts,
                                np.random.default_rng([cfg.seed, 1]))
    state_std = train.obs[: train.size].std(0) + 1e-6
    s0 = torch.as_tensor(task.s0)
    actions = torch.as_tensor(task.actions)
    generator = torch.Generator().manual_seed(cfg.seed)
    errors: dict[str, dict] = {}
    timings = training["timings_s"]
    t0 = time.perf_counter()
    pred = ensemble.rollout(s0, actions, generator=generator).states.cpu().numpy()
    timings["ensemble_rollout_s"] = time.perf_counter() - t0
    errors["ensemble"] = horizon_errors(pred, task, state_std)
    # the same members without sampling their Gaussian: separates model error from the noise
    # that MBPO-style rollouts inject on purpose
    pred = ensemble.rollout(s0, actions, generator=generator, sample=False).states.cpu().numpy()
    errors["ensemble_mean"] = horizon_errors(pred, task, state_std)
    errors["copy_s0"] = horizon_errors(np.repeat(task.s0[:, None], cfg.max_horizon + 1, 1),
                                       task, state_std)
    for spec, sampler in tqdm(samplers.items(), desc="diffusion rollouts", unit="sampler",
                              disable=None):
        t0 = time.perf_counter()
        pred = chained_diffusion_rollout(diffusion, sampler, s0, actions, cfg.max_horizon,
                                         generator).cpu().numpy()
        timings[f"diffusion_{spec}_rollout_s"] = time.perf_counter() - t0
        errors[f"diffusion_{spec}"] = horizon_errors(pred, task, state_std)

    result = {
        "command": " ".join(["agdrl", *sys.argv[1:]]),  # no machine paths
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
        "diffusion_config_resolved": dataclasses.asdict(dcfg),
        "machine": machine_info(cfg.device), "source": source_version(),
        **training,
        "num_starts": len(task.s0), "restore_max_abs_error": task.restore_error,
        "segment_offsets": segment_offsets(dcfg.horizon, cfg.max_horizon),
        "parameters": {"diffusion": sum(p.numel() for p in diffusion.diffusion.parameters()),
                       "ensemble": sum(p.numel() for p in ensemble.parameters())},
        "errors": errors,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    plot_errors(result, out / "error_vs_horizon.png")
    log(summary_table(result))
    return result


def train_diffusion(model: DiffusionWorldModel, train: ReplayBuffer, steps: int,
                    rng: np.random.Generator, log: Callable[[str], None]) -> list[float]:
    """``steps`` gradient steps of ``model`` on segments drawn from ``train``; the losses."""
    cfg, losses = model.cfg, []
    for step in tqdm(range(steps), desc="diffusion training", unit="step", disable=None):
        batch = train.sample_segments(cfg.batch_size, cfg.horizon, rng, pad=cfg.pad_segments)
        losses.append(model.train_step(batch))
        if step % max(steps // 10, 1) == 0:
            log(f"diffusion step {step}: loss {losses[-1]:.4f}")
    return losses


def collect_and_train(cfg: AvalancheConfig, dcfg: DiffusionConfig, env: gym.Env,
                      log: Callable[[str], None]
                      ) -> tuple[ReplayBuffer, ReplayBuffer, DiffusionWorldModel,
                                 ProbabilisticEnsemble, dict]:
    """Collect train/validation/test data with the behaviour policy and train both models with
    the same number of gradient steps; saves models and datasets in ``cfg.out_dir``."""
    out = Path(cfg.out_dir)
    rng = np.random.default_rng(cfg.seed)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if cfg.behavior == "sac":
        log(f"training SAC behaviour policy for {cfg.behavior_steps} steps on {cfg.env}")
        act = train_sac_policy(cfg.env, cfg.behavior_steps, cfg.seed)
    else:
        act = random_policy(env)
    timings["behavior_s"] = time.perf_counter() - t0
    train, val, test = new_buffer(env), new_buffer(env), new_buffer(env)
    returns = collect(env, act, cfg.dataset_steps, train, rng, cfg.action_noise, seed=cfg.seed)
    collect(env, act, max(cfg.dataset_steps // 20, 1000), val, rng, cfg.action_noise)
    test_returns: list[float] = []
    for _ in range(cfg.test_episodes):
        test_returns += collect(env, act, 1, test, rng, cfg.action_noise)
    log(f"dataset: {train.size} transitions in {len(returns)} episodes, mean return "
        f"{np.mean(returns):.1f}; held-out {test.size} transitions")

    n = train.size
    ds, da = train.obs_dim, train.action_dim
    diffusion = DiffusionWorldModel(ds, da, dcfg, cfg.device)
    diffusion.update_normalizers(train.obs[:n], train.actions[:n], train.rewards[:n])
    ensemble = ProbabilisticEnsemble(ds, da, cfg.ensemble, cfg.device)
    bootstrap = BootstrapSampler(cfg.ensemble.members)
    ensemble.update_normalizers(train.obs[:n], train.actions[:n], train.rewards[:n],
                                train.next_obs[:n])
    losses: dict[str, list[float]] = {"diffusion": [], "ensemble": []}
    t0 = time.perf_counter()
    losses["diffusion"] = train_diffusion(diffusion, train, cfg.train_steps, rng, log)
    timings["diffusion_train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for step in tqdm(range(cfg.train_steps), desc="ensemble training", unit="step",
                     disable=None):
        losses["ensemble"].append(ensemble.train_step(
            bootstrap.sample(train, cfg.ensemble.batch_size, rng)))
        if step % max(cfg.train_steps // 10, 1) == 0:
            log(f"ensemble step {step}: loss {losses['ensemble'][-1]:.4f}")
    ensemble.select_elites(val.sample_transitions(min(val.size, 10_000), rng))
    timings["ensemble_train_s"] = time.perf_counter() - t0
    diffusion.save(out / "diffusion.safetensors")
    ensemble.save(out / "ensemble.safetensors")
    train.save(out / "train_buffer.npz")
    test.save(out / "test_buffer.npz")
    training = {
        "dataset": {"train_transitions": train.size, "train_episodes": len(returns),
                    "train_mean_return": float(np.mean(returns)),
                    "test_transitions": test.size, "test_returns": test_returns},
        "gradient_steps": cfg.train_steps, "timings_s": timings,
        "final_loss": {k: float(np.mean(v[-100:])) for k, v in losses.items()},
    }
    return train, test, diffusion, ensemble, training


def summary_table(result: dict, horizons: tuple[int, ...] = (1, 10, 25, 50)) -> str:
    """Markdown table of mean normalized MSE at a few horizons."""
    hs = [h for h in horizons if h <= len(next(iter(result["errors"].values()))["mean"])]
    lines = ["| model | " + " | ".join(f"h={h}" for h in hs) + " |",
             "|---|" + "---|" * len(hs)]
    for name, e in result["errors"].items():
        vals = [e["mean"][h - 1] for h in hs]
        lines.append(f"| {name} | " + " | ".join("—" if v is None else f"{v:.4g}"
                                                for v in vals) + " |")
    return "\n".join(lines)


def plot_errors(result: dict, path: Path) -> None:
    """Mean normalized MSE vs horizon (log scale) with the inter-quartile band, for the
    baselines, the full-chain diffusion sampler and the fewest-step one (all are in the JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diffusion = [n for n in result["errors"] if n.startswith("diffusion_")]
    fewest = min(diffusion, key=lambda n: int(n.split(":")[1]) if ":" in n else 10**9)
    shown = [n for n in result["errors"] if not n.startswith("diffusion_")]
    shown += sorted({diffusion[0], fewest})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in shown:
        e = result["errors"][name]
        hs = [h + 1 for h, v in enumerate(e["mean"]) if v is not None]
        mean = [v for v in e["mean"] if v is not None]
        lo = [v for v in e["q25"] if v is not None]
        hi = [v for v in e["q75"] if v is not None]
        style = "--" if name == "copy_s0" else "-"
        (line,) = ax.plot(hs, mean, style, label=name)
        ax.fill_between(hs, lo, hi, color=line.get_color(), alpha=0.12)
    cfg = result["config"]
    ax.set_yscale("log")
    ax.set_xlabel("open-loop horizon h (steps)")
    ax.set_ylabel("normalized state MSE (mean; band: IQR)")
    ax.set_title(f"{cfg['env']}: error vs horizon, {result['gradient_steps']} gradient steps "
                 f"each, H={result['diffusion_config_resolved']['horizon']}", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
