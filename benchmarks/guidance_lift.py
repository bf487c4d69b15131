"""Guidance lift (DESIGN §4): do advantage-guided segments have higher value, and do their
actions earn more in the real simulator, than unguided ones, and at what cost in dynamics error?

Two sources. ``--run-dir RUN`` takes a training run's agent, world model and imagination
settings (its final model, else its latest checkpoint; chained segments as the run imagines
them) and collects the held-out start states by running the run's policy (sampled actions) in
a fresh environment; reward guidance gets a reward model fitted to the run's replay buffer when
the run has none. ``--source DIR`` starts from an error-avalanche run's data and diffusion
world model (run ``benchmarks/avalanche.sh TASK`` first; it writes ``train_buffer.npz``,
``test_buffer.npz`` and ``diffusion.safetensors``). Then, in one run:
  1. the actor-critic is trained in imagination (policy guidance, no state guidance, the fast
     preset's sampler) for ``--agent-updates`` updates, so there is a real critic and policy;
  2. the world model gets an advantage input (zero-initialized, so its function is unchanged)
     and is fine-tuned for ``--label-steps`` steps with advantage labels from that critic, so
     classifier-free guidance can be measured with the same network (all other rows use its
     unconditional prediction);
  3. a reward model r(s, a) is fitted to the real transitions for reward guidance;
  4. from the same held-out start states and the same sampling noise, each guidance variant
     imagines one batch of segments; every segment's actions are replayed in the simulator from
     the exact start state.
Reported per variant and sampler: mean V over the imagined states, the imagined discounted
return (Σ γ^t r̂_t + γ^{H-1} V(ŝ_{H-1})), the same quantity with the simulator's states and
rewards under the imagined actions ("replayed"), the normalized state MSE between imagined
and replayed states, the mean absolute error of the imagined rewards over the replayed steps,
and the fraction of segments that terminate in imagination and in the simulator; differences
to the unguided row are paired per start state with a 95% normal-approximation confidence
interval.

    .venv/bin/python benchmarks/guidance_lift.py --env Hopper-v5 \\
        --source results/avalanche/hopper-v5 --out results/guidance_lift/hopper-v5
    .venv/bin/python benchmarks/guidance_lift.py --run-dir RUN --samplers ddim:2:trailing \\
        --variants none sag:resample:1:4 --out results/guidance_lift/hopper-v5-run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import with_sampler

from agdrl import AGDMBRL
from agdrl.a2c import ActorCriticAgent
from agdrl.buffer import ReplayBuffer
from agdrl.checkpoint import complete_checkpoints
from agdrl.collect import collect, new_buffer
from agdrl.config import ActorCriticConfig, ImaginationConfig
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.envs import make_env, replay_actions
from agdrl.guidance import advantage_labels
from agdrl.imagination import Imagination
from agdrl.provenance import machine_info
from agdrl.reward_model import RewardModel, fit_reward_model
from agdrl.segments import Segment
from agdrl.termination import TerminationModel
from agdrl.world_models import DiffusionWorld

VARIANTS = ("none", "reward", "sag", "eag", "cfg", "reward:normalized:1", "sag:normalized:1",
            "eag:normalized:1")
"""Guidance variants: NAME or NAME:MODE:SCALE for the state-guidance ones (default mode and
scale from the command line, the paper's sigma4 and c = 4); NAME+last also guides the
segment's last state, NAME+first guides the states before the policy draws the actions,
NAME+actions guides the actions instead of the states (advantage-weighted policy)."""


def discounted_return(rewards: np.ndarray, last_value: np.ndarray, alive: np.ndarray,
                      gamma: float) -> np.ndarray:
    """Σ_{t<H-1} γ^t w_t r_t + γ^{H-1} w_{H-1} V_last; rewards (N, H-1), alive (N, H) the
    weights w_t (0 from the step after a terminal)."""
    discounts = gamma ** np.arange(rewards.shape[1])
    return ((rewards * alive[:, :-1]) * discounts).sum(1) + \
        gamma ** rewards.shape[1] * alive[:, -1] * last_value


def paired(diff: np.ndarray) -> dict:
    """Mean of paired differences with a 95% normal-approximation interval."""
    diff = diff[np.isfinite(diff)]
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
    return {"mean": float(diff.mean()), "ci95": [float(diff.mean() - half),
                                                 float(diff.mean() + half)]}


def evaluate_variant(model: DiffusionWorldModel, agent: ActorCriticAgent,
                     imagination: Imagination, env, starts: np.ndarray, test: ReplayBuffer,
                     state_std: np.ndarray, seed: int) -> tuple[dict, dict[str, np.ndarray]]:
    gamma = agent.cfg.gamma
    s0 = torch.as_tensor(test.obs[starts])
    t0 = time.perf_counter()
    seg, metrics = imagination(s0, torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - t0
    h = seg.states.shape[1]  # chained segments: longer than the model's horizon
    with torch.no_grad():
        values = agent.critic(seg.states).numpy()  # (N, H)
    continues = (seg.terminals.numpy() <= 0.5).astype(np.float32)
    alive = np.cumprod(np.concatenate([np.ones((len(starts), 1)), continues[:, :-1]], 1), 1)
    imagined_states, actions = seg.states.numpy(), seg.actions.numpy()
    imagined = discounted_return(seg.rewards.numpy()[:, :-1], values[:, -1], alive, gamma)
    replayed, errors, replay_rewards, reward_errors, ends = [], [], [], [], []
    imagined_rewards = seg.rewards.numpy()
    for j, i in enumerate(starts):
        states, rewards, steps, ended = replay_actions(env, test.sim_states[i], actions[j, :-1])
        with torch.no_grad():
            last = float(agent.critic(torch.as_tensor(states[-1]))) if steps == h - 1 else 0.0
        real_alive = (np.arange(h) <= steps).astype(np.float32)
        real_alive[-1] *= not ended
        replayed.append(discounted_return(rewards[None], np.array([last]), real_alive[None],
                                          gamma)[0])
        replay_rewards.append(rewards[:steps].sum())
        reward_errors.append(float(np.abs(imagined_rewards[j, :steps] - rewards[:steps]).mean())
                             if steps else np.nan)
        ends.append(float(ended))
        diff = (imagined_states[j, 1 : steps + 1] - states[1 : steps + 1]) / state_std
        errors.append(float((diff**2).mean()) if steps else np.nan)
    per_segment = {"imagined_return": imagined, "replayed_return": np.array(replayed),
                   "mean_value": values.mean(1), "dynamics_error": np.array(errors),
                   "reward_error": np.array(reward_errors),
                   "imagined_termination": 1.0 - alive[:, -1],
                   "replayed_termination": np.array(ends)}
    row = {k: float(np.nanmean(v)) for k, v in per_segment.items()}
    row.update({"replayed_reward_sum": float(np.mean(replay_rewards)), "seconds": seconds,
                **{f"imagination_{k}": v for k, v in metrics.items()}})
    return row, per_segment


def train_agent_in_imagination(model: DiffusionWorldModel, agent: ActorCriticAgent,
                               train: ReplayBuffer, updates: int, rng: np.random.Generator,
                               gen: torch.Generator, log: list[dict]) -> Imagination:
    """``updates`` actor-critic updates on 256 imagined segments each (policy guidance only,
    the fast preset's 8-step DDIM) from real start states; returns the imagination used."""
    trainer = Imagination(model, agent, ImaginationConfig(batch_size=256, sampler="ddim",
                                                           sampler_steps=8, guidance="none"))
    for u in range(updates):
        starts = torch.as_tensor(train.obs[rng.integers(0, train.size, 256)])
        seg, metrics = trainer(starts, gen)
        metrics.update(agent.update(seg))
        if u % 100 == 0 or u == updates - 1:
            log.append({"update": u, **metrics})
            print(f"agent update {u}: value {metrics['value']:.2f} return "
                  f"{metrics['return']:.2f}", flush=True)
    return trainer


@dataclasses.dataclass
class Source:
    """What the variants are measured with: a world model and agent, the imagination settings
    the variants change, the held-out start states (with simulator states), the state scale
    of the dynamics error, and what to record about how it was made."""

    model: DiffusionWorldModel
    agent: ActorCriticAgent
    imagination: ImaginationConfig
    reward_model: RewardModel | None
    termination: TerminationModel | None
    held_out: ReplayBuffer
    state_std: np.ndarray
    log_delta: float | None  # 'pull' policy guidance: δ as tuned in training
    record: dict


def from_avalanche(args: argparse.Namespace, env, rng: np.random.Generator,
                   gen: torch.Generator) -> Source:
    """Steps 1–3 on an error-avalanche run's data and world model."""
    train = ReplayBuffer.load(args.source / "train_buffer.npz")
    test = ReplayBuffer.load(args.source / "test_buffer.npz")
    base = DiffusionWorldModel.load(args.source / "diffusion.safetensors")
    model = DiffusionWorldModel(base.obs_dim, base.action_dim, dataclasses.replace(
        base.cfg, advantage_conditioning=True))
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(".label." in k for k in missing), (missing, unexpected)
    space = env.action_space
    agent = ActorCriticAgent(base.obs_dim, space.low, space.high, ActorCriticConfig())
    n = train.size
    agent.update_normalizers(train.obs[:n])
    log: dict = {"agent": [], "labels": []}

    # 1. actor-critic in imagination (policy guidance only), the fast preset's sampler
    t0 = time.perf_counter()
    trainer = train_agent_in_imagination(model, agent, train, args.agent_updates, rng, gen,
                                         log["agent"])
    agent_seconds = time.perf_counter() - t0

    # 2. advantage labels from that critic: fine-tune the (zero-initialized) label input
    t0 = time.perf_counter()
    for step in range(args.label_steps):
        batch = train.sample_segments(model.cfg.batch_size, model.cfg.horizon, rng)
        seg = Segment.from_numpy(batch.states, batch.actions, batch.rewards, batch.terminals)
        labels = advantage_labels(agent.critic, seg, torch.as_tensor(batch.mask),
                                  agent.cfg.gamma)
        loss = model.train_step(batch, gen, labels)
        if step % 500 == 0 or step == args.label_steps - 1:
            log["labels"].append({"step": step, "loss": loss})
    label_seconds = time.perf_counter() - t0

    # 3. reward model for reward guidance
    reward_model, reward_loss = fit_reward_model(train, args.reward_steps, rng)
    return Source(model, agent, ImaginationConfig(), reward_model, None, test,
                  train.obs[:n].std(0) + 1e-6, trainer.policy.log_delta,
                  {"world_model": dataclasses.asdict(model.cfg), "agent_seconds": agent_seconds,
                   "label_seconds": label_seconds, "reward_model_final_loss": reward_loss,
                   "training_log": log})


def from_run(args: argparse.Namespace, rng: np.random.Generator) -> Source:
    """A training run's latest checkpoint; held-out starts from its policy in a fresh env."""
    checkpoint = complete_checkpoints(args.run_dir)[-1]
    run = AGDMBRL.load(checkpoint)
    world, agent = run.world_model, run.agent
    if not isinstance(world, DiffusionWorld):
        raise SystemExit(f"{args.run_dir} trained the {run.cfg.world_model!r} world model; "
                         f"guidance needs the diffusion one")
    train = ReplayBuffer.load(checkpoint / "buffer.npz")
    n = train.size
    reward_model, reward_loss = world.reward_model, None
    if reward_model is None and any(v.split(":")[0].split("+")[0] == "reward"
                                    for v in args.variants):
        reward_model, reward_loss = fit_reward_model(train, args.reward_steps, rng)
    env = make_env(run.cfg.env, seed=args.seed + 20_000)
    held_out = new_buffer(env)
    generator = torch.Generator().manual_seed(args.seed)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return agent.actor.sample(torch.as_tensor(obs, dtype=torch.float32)[None],
                                      generator)[0].numpy()

    returns = collect(env, act, args.held_out_steps, held_out, rng, seed=args.seed + 20_000)
    return Source(world.network, agent, run.cfg.imagination, reward_model,
                  world.termination_model, held_out, train.obs[:n].std(0) + 1e-6, None,
                  {"run_dir": str(args.run_dir), "checkpoint": checkpoint.name,
                   "run_config": dataclasses.asdict(run.cfg),
                   "held_out_episode_returns": returns, "reward_model_final_loss": reward_loss})


def reward_model_for(icfg: ImaginationConfig, src: Source) -> RewardModel | None:
    """The source's reward model where the variant uses one (reward guidance, or rewards from
    the regressor), else None."""
    regressor = icfg.experimental.reward == "regressor"
    return src.reward_model if icfg.guidance == "reward" or regressor else None


def variant_config(base: ImaginationConfig, sampler: str, variant: str, batch: int,
                   args: argparse.Namespace) -> ImaginationConfig:
    """NAME[@ADVANTAGE][+last][+first][+actions][:MODE:SCALE[:CANDIDATES]] on the source's
    imagination settings (ADVANTAGE: td, gae or qv; +last: guide the last state too; +first:
    state guidance before policy guidance; +actions: the guidance moves the actions instead
    of the states)."""
    name, _, rest = variant.partition(":")
    mode, _, rest = rest.partition(":")
    scale, _, candidates = rest.partition(":")
    name, *flags = name.split("+")
    name, _, advantage = name.partition("@")
    return with_sampler(base, sampler, batch_size=batch, guidance=name,
                        advantage=advantage or base.advantage,
                        guide_last_state="last" in flags,
                        experimental=dataclasses.replace(
                            base.experimental, guide_states_first="first" in flags,
                            guide_actions="actions" in flags),
                        guidance_scale=float(scale or args.guidance_scale),
                        guidance_mode=mode or args.guidance_mode,
                        resample_candidates=int(candidates or base.resample_candidates),
                        cfg_target=args.cfg_target, cfg_weight=args.cfg_weight)


def rank_check(src: Source, env, starts: np.ndarray, candidates: int, sampler: str,
               args: argparse.Namespace) -> dict:
    """Does the model rank a start's candidates as the simulator does? ``candidates``
    unguided segments per start, every one replayed: the mean over starts of the Spearman
    correlation between imagined and replayed return among a start's candidates, and the
    replayed lift over the start's mean of the candidate the model ranks first (what greedy
    resampling could gain) and of the one the simulator ranks first (the ceiling)."""
    icfg = variant_config(src.imagination, sampler, "none", len(starts) * candidates, args)
    imagination = Imagination(src.model, src.agent, icfg, reward_model_for(icfg, src),
                              src.termination)
    _, per = evaluate_variant(src.model, src.agent, imagination, env,
                              np.repeat(starts, candidates), src.held_out, src.state_std,
                              args.seed)
    imagined = per["imagined_return"].reshape(-1, candidates)
    replayed = per["replayed_return"].reshape(-1, candidates)

    def ranks(x: np.ndarray) -> np.ndarray:
        return x.argsort(1).argsort(1).astype(np.float64)

    ri, rr = ranks(imagined), ranks(replayed)
    ri, rr = ri - ri.mean(1, keepdims=True), rr - rr.mean(1, keepdims=True)
    spearman = (ri * rr).sum(1) / np.sqrt((ri**2).sum(1) * (rr**2).sum(1) + 1e-12)
    mean = replayed.mean(1)
    model_pick = replayed[np.arange(len(replayed)), imagined.argmax(1)] - mean
    return {"candidates": candidates, "spearman": paired(spearman),
            "model_best_lift": paired(model_pick),
            "oracle_best_lift": paired(replayed.max(1) - mean),
            "replayed_spread": float(replayed.std(1).mean()),
            "imagined_spread": float(imagined.std(1).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", help="the task (--source; a run names its own)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--source", type=Path,
                        help="an error-avalanche output folder (data and world model)")
    source.add_argument("--run-dir", type=Path, help="a training run with a checkpoint")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--agent-updates", type=int, default=1000)
    parser.add_argument("--label-steps", type=int, default=3000)
    parser.add_argument("--reward-steps", type=int, default=3000)
    parser.add_argument("--held-out-steps", type=int, default=5000,
                        help="--run-dir: policy steps collected for the held-out starts")
    parser.add_argument("--starts", type=int, default=256)
    parser.add_argument("--samplers", nargs="+", default=["ddim:8", "ddpm:128"],
                        help="KIND[:STEPS[:SPACING]]")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        help="NAME[@ADVANTAGE][+last][+first][+actions][:MODE:SCALE[:CANDIDATES]], "
                        "NAME in "
                        "none reward sag eag cfg, ADVANTAGE in td gae qv, MODE in sigma4 "
                        "normalized total resample")
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--guidance-mode", default="sigma4",
                        choices=["sigma4", "normalized", "total", "resample"])
    parser.add_argument("--cfg-target", type=float, default=1.0)
    parser.add_argument("--cfg-weight", type=float, default=2.0)
    parser.add_argument("--rank-check", type=int, default=0, metavar="N",
                        help="also replay N unguided candidates per start and compare the "
                        "model's ranking of them with the simulator's (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.source is not None and not args.env:
        parser.error("--source needs --env")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    if args.run_dir is not None:
        src = from_run(args, rng)
        env = make_env(src.record["run_config"]["env"], seed=args.seed)
    else:
        env = make_env(args.env, seed=args.seed)
        src = from_avalanche(args, env, rng, gen)

    # 4. every variant from the same starts (and, at one batch shape, the same noise),
    # replayed in the simulator
    test = src.held_out
    starts = rng.choice(test.size, size=min(args.starts, test.size), replace=False)
    results: dict = {}
    ranking: dict = {}
    for spec in args.samplers:
        rows, per = {}, {}
        for variant in args.variants:
            icfg = variant_config(src.imagination, spec, variant, len(starts), args)
            imagination = Imagination(src.model, src.agent, icfg, reward_model_for(icfg, src),
                                      src.termination)
            if src.log_delta is not None:
                imagination.policy.log_delta = src.log_delta
            rows[variant], per[variant] = evaluate_variant(
                src.model, src.agent, imagination, env, starts, test, src.state_std, args.seed)
        if "none" in per:
            for variant in rows:
                rows[variant]["vs_none"] = {
                    k: paired(per[variant][k] - per["none"][k])
                    for k in ("mean_value", "imagined_return", "replayed_return",
                              "dynamics_error")}
        results[spec] = rows
        print(table(spec, rows), flush=True)
        if args.rank_check:
            ranking[spec] = rank_check(src, env, starts, args.rank_check, spec, args)
            print(f"ranking of {args.rank_check} candidates: {json.dumps(ranking[spec])}",
                  flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({
        "command": "benchmarks/guidance_lift.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if v is not None),
        "machine": machine_info(), **src.record, "results": results,
        "rank_check": ranking}, indent=1, default=str))
    (args.out / "SUMMARY.md").write_text("\n\n".join(table(s, r) for s, r in results.items())
                                         + "\n")


def table(sampler: str, rows: dict) -> str:
    """Markdown table of one sampler's rows, differences to 'none' with their 95% CI."""
    lines = [f"sampler {sampler}", "",
             "| guidance | mean V | imagined return | replayed return | Δ replayed vs none "
             "(95% CI) | dynamics error | Δ V vs none (95% CI) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        d = r.get("vs_none", {})

        def ci(key: str, d=d) -> str:
            if key not in d:
                return ""
            lo, hi = d[key]["ci95"]
            return f"{d[key]['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"

        lines.append(f"| {name} | {r['mean_value']:.3f} | {r['imagined_return']:.3f} | "
                     f"{r['replayed_return']:.3f} | {ci('replayed_return')} | "
                     f"{r['dynamics_error']:.4f} | {ci('mean_value')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
