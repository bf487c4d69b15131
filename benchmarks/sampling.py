"""Guided-imagination speed with its accuracy alongside (issue: fast imagination).

For each configuration ("row"), in one run:
  (a) throughput: imagined transitions per second of one guided imagination batch
      (``--batch`` segments of the world model's H, SAG with policy guidance);
  (b) latency: seconds for one guided trajectory of the H = 50 world model (batch 1);
  (c) accuracy: the normalized state MSE between the imagined segments and the simulator
      replaying their actions from the same start states, the guided mean value V, and what
      SAG adds to V over the same sampler without state guidance (same starts and noise,
      paired per start), so that a fast sampler that loses the guidance shows it;
  (d) peak memory: the peak resident memory of the row's process, which holds the models,
      the data and the imagination (CPU; each row runs in its own process, so peaks do not
      mix), or the peak CUDA memory allocated during the timed calls.

Rows: NAME = ARCH/SAMPLER:STEPS[:SPACING]/POLICY[:settleN][:relaxB], e.g.
``ours/ddim:8/sample`` (the fast preset, with the imagination config's default settle steps
and relaxation), ``ours/ddim:8/sample:settle0:relax1`` (the policy guidance before
2026-11-27), ``ours/ddim:4:trailing/sample`` (4 DDIM steps on the trailing grid) or
``reference/ddpm:128/pull`` (the reference: a 1024 × 6 residual MLP, 128 ancestral steps,
PolyGRAD's policy guidance). SAMPLER is ddpm, ddim, heun, dpm2m, or ``student``: the model
distilled (once, before the rows, ``--distill-updates`` steps from its EMA weights) into a
STEPS-step student of ``--teacher-steps`` DDIM steps, sampled with DDIM on its grid. The H = 50
model used for latency is not distilled: its student starts from the teacher's weights, and
its speed does not depend on them. ``--reuse-students`` keeps students distilled by an
earlier call (``--distill-only`` under load, time on a quiet machine). ARCH ``ours`` is the
512 × 4 MLP of ``--source``; ``reference`` loads ``--reference-model`` when given, else its
weights are random and its accuracy columns are left empty (its speed does not depend on the
weights).
Every row uses the same critic and policy, trained for ``--agent-updates`` updates in
imagination on the ``ours`` model.

    .venv/bin/python benchmarks/sampling.py --source results/avalanche/hopper-v5 \\
        --source-h50 results/avalanche/hopper-v5-h50 --env Hopper-v5 \\
        --out results/speed/sampling_hopper_cpu.json

Throughput and latency are medians over ``--repeats`` timed calls after one warm-up call; run
nothing else on the machine meanwhile, or pass ``--accuracy-only`` (measures (c) alone, which
does not depend on the machine's load).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from agdrl.a2c import ActorCriticAgent
from agdrl.buffer import ReplayBuffer
from agdrl.config import ActorCriticConfig, ImaginationConfig, reference_denoiser
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.envs import make_env
from agdrl.imagination import Imagination
from agdrl.provenance import machine_info, source_version
from agdrl_lab.avalanche import train_diffusion

sys.path.insert(0, str(Path(__file__).parent))
from common import timed, with_sampler
from guidance_lift import evaluate_variant, paired, train_agent_in_imagination

ROWS = ("reference/ddpm:128/pull", "ours/ddpm:128/pull", "ours/ddim:8/pull",
        "ours/ddim:8/sample", "ours/ddim:4/sample", "ours/ddim:2/sample",
        "ours/heun:4/sample", "ours/dpm2m:8/sample", "ours/dpm2m:4/sample",
        "ours/student:2/sample", "ours/student:1/sample")


def student_path(out: Path, source: Path, steps: int) -> Path:
    return out.with_name(f"{out.stem}_{source.name}_student{steps}.safetensors")


def distill(source: Path, steps: int, updates: int, args: argparse.Namespace) -> dict:
    """Distil ``source``'s model into a ``steps``-step student of a ``--teacher-steps`` DDIM
    teacher, starting from its EMA weights, ``updates`` steps on its training buffer; saved
    next to ``--out``. Returns the first and last 50 losses' means and the seconds taken."""
    path = student_path(args.out, source, steps)
    log = path.with_suffix(".json")
    if args.reuse_students and log.exists():
        return json.loads(log.read_text())
    model = DiffusionWorldModel.load(source / "diffusion.safetensors")
    cfg = dataclasses.replace(model.cfg, student_steps=steps,
                              student_teacher_steps=args.teacher_steps)
    student = DiffusionWorldModel(model.obs_dim, model.action_dim, cfg)
    missing, unexpected = student.load_state_dict(model.state_dict(), strict=False)
    if unexpected or not all(key.startswith("student.") for key in missing):
        raise RuntimeError(f"{source} does not fit: missing {missing}, unexpected {unexpected}")
    student.init_student()
    train = ReplayBuffer.load(source / "train_buffer.npz")
    rng, gen = np.random.default_rng(args.seed), torch.Generator().manual_seed(args.seed)
    start, losses = time.perf_counter(), []
    for _ in range(updates):
        batch = train.sample_segments(cfg.batch_size, cfg.horizon, rng, pad=cfg.pad_segments)
        losses.append(student.distill_step(batch, gen))
    student.save(path)
    summary = {"updates": updates, "teacher_steps": args.teacher_steps,
               "first_losses": float(np.mean(losses[:50])) if losses else None,
               "last_losses": float(np.mean(losses[-50:])) if losses else None,
               "seconds": time.perf_counter() - start}
    log.write_text(json.dumps(summary))
    print(f"student of {source.name}, {steps} steps: {summary}", flush=True)
    return summary


def load_model(source: Path, arch: str, reference: Path | None, device: str,
               student: Path | None = None) -> tuple[DiffusionWorldModel, bool]:
    """The world model of a row on ``device`` and whether its weights are trained."""
    if student is not None:
        return DiffusionWorldModel.load(student, device), True
    ours = DiffusionWorldModel.load(source / "diffusion.safetensors", device)
    if arch == "ours":
        return ours, True
    if reference is not None:
        return DiffusionWorldModel.load(reference, device), True
    cfg = dataclasses.replace(ours.cfg, denoiser=reference_denoiser())
    model = DiffusionWorldModel(ours.obs_dim, ours.action_dim, cfg, device)
    for name in ("state_norm", "action_norm", "reward_norm"):  # same units as the trained one
        getattr(model, name).load_state_dict(getattr(ours, name).state_dict())
    return model, False


def train_reference(args: argparse.Namespace) -> None:
    """Train the reference-size model (1024 × 6 MLP, ``--source``'s config and normalizers)
    for ``--train-reference`` gradient steps on ``--source``'s training buffer, as the
    avalanche job trained ours (20k steps); saved to ``--reference-model`` with a json log."""
    torch.manual_seed(args.seed)
    model, _ = load_model(args.source, "reference", None, args.device)
    train = ReplayBuffer.load(args.source / "train_buffer.npz")
    start = time.perf_counter()
    losses = train_diffusion(model, train, args.train_reference,
                             np.random.default_rng(args.seed), print)
    args.reference_model.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.reference_model)
    args.reference_model.with_suffix(".json").write_text(json.dumps({
        "command": "benchmarks/sampling.py " + " ".join(sys.argv[1:]),
        "steps": args.train_reference, "seed": args.seed, "device": args.device,
        "first_losses": float(np.mean(losses[:50])), "last_losses": float(np.mean(losses[-50:])),
        "seconds": time.perf_counter() - start}))


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_row(args: argparse.Namespace) -> dict:
    """Measure one row in this process (called through ``--row``)."""
    torch.set_num_threads(args.threads)
    arch, sampler, mode = args.row.split("/")
    mode, *options = mode.split(":")
    policy_changes: dict[str, float] = {}
    for option in options:
        if option.startswith("settle"):
            policy_changes["settle_steps"] = int(option.removeprefix("settle"))
        elif option.startswith("relax"):
            policy_changes["policy_relaxation"] = float(option.removeprefix("relax"))
        else:
            raise SystemExit(f"{args.row}: unknown policy option {option!r} (settleN, relaxB)")
    kind, steps, *spacing = sampler.split(":")
    device = torch.device(args.device)
    test = ReplayBuffer.load(args.source / "test_buffer.npz")
    agent = load_agent(args.agent_path, args.device)
    distilled = kind == "student"
    if distilled and spacing:
        raise SystemExit(f"{args.row}: a student samples on its own grid; drop the spacing")
    model, trained = load_model(args.source, arch, args.reference_model, args.device,
                                student_path(args.out, args.source, int(steps)) if distilled
                                else None)
    model_h50, _ = load_model(args.source_h50, arch, None, args.device,
                              student_path(args.out, args.source_h50, int(steps)) if distilled
                              else None)
    icfg = with_sampler(ImaginationConfig(batch_size=args.batch, guidance="sag",
                                          policy_guidance=mode, guidance_mode=args.guidance_mode,
                                          guidance_scale=args.guidance_scale),
                        f"ddim:{steps}" if distilled else sampler, **policy_changes)
    imagination = Imagination(model, agent, icfg)
    imagination_h50 = Imagination(model_h50, agent, dataclasses.replace(icfg, batch_size=1))
    rng = np.random.default_rng(args.seed)
    starts = torch.as_tensor(test.obs[rng.integers(0, test.size, args.batch)], device=device)
    one = starts[:1]
    gen = torch.Generator().manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    if mode == "pull":  # δ tuned as training would before it is timed
        for _ in range(args.tune_batches):
            imagination(starts, gen)

    def batch() -> None:
        imagination(starts, gen)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def single() -> None:
        imagination_h50(one, gen)
        if device.type == "cuda":
            torch.cuda.synchronize()

    row = {"row": args.row, "trained_weights": trained,
           "grid": imagination.sampler.grid(model.cfg.num_steps),
           "network_calls": imagination.sampler.network_calls(model.cfg.num_steps),
           "denoiser_parameters": sum(p.numel() for p in model.diffusion.denoiser.parameters())}
    if not args.accuracy_only:
        seconds = timed(batch, args.repeats)
        row.update(batch_seconds=seconds,
                   transitions_per_s=args.batch * (model.cfg.horizon - 1) / seconds,
                   latency_h50_s=timed(single, args.latency_repeats),
                   peak_memory_bytes=int(torch.cuda.max_memory_allocated()
                                         if device.type == "cuda" else peak_rss_bytes()))
    if trained and device.type == "cpu":  # the same arithmetic on any device: measured once
        env = make_env(args.env, seed=args.seed)
        train = ReplayBuffer.load(args.source / "train_buffer.npz")
        accuracy_starts = rng.choice(test.size, size=args.accuracy_starts, replace=False)
        icfg_acc = dataclasses.replace(icfg, batch_size=len(accuracy_starts))
        state_std = train.obs[: train.size].std(0) + 1e-6
        acc, guided = evaluate_variant(model, agent, Imagination(model, agent, icfg_acc), env,
                                       accuracy_starts, test, state_std, args.seed)
        plain, unguided = evaluate_variant(
            model, agent, Imagination(model, agent, dataclasses.replace(icfg_acc, guidance="none")),
            env, accuracy_starts, test, state_std, args.seed)
        row.update(dynamics_error=acc["dynamics_error"], mean_value=acc["mean_value"],
                   mean_value_unguided=plain["mean_value"],
                   sag_value_lift=paired(guided["mean_value"] - unguided["mean_value"]))
    return row


def load_agent(path: Path, device: str) -> ActorCriticAgent:
    """The critic and policy written by :func:`prepare_agent`."""
    meta = json.loads(path.with_suffix(".json").read_text())
    agent = ActorCriticAgent(meta["obs_dim"], np.array(meta["low"]), np.array(meta["high"]),
                             ActorCriticConfig(), device)
    with np.load(path, allow_pickle=False) as saved:
        agent.load_state_dict({k: torch.as_tensor(saved[k]) for k in saved.files})
    return agent


def prepare_agent(args: argparse.Namespace) -> Path:
    """Train the critic and policy every row shares; saved as npz + json in ``--out``'s
    folder (weights only, no pickle)."""
    train = ReplayBuffer.load(args.source / "train_buffer.npz")
    model = DiffusionWorldModel.load(args.source / "diffusion.safetensors")
    space = make_env(args.env).action_space
    torch.manual_seed(args.seed)
    agent = ActorCriticAgent(model.obs_dim, space.low, space.high, ActorCriticConfig())
    agent.update_normalizers(train.obs[: train.size])
    train_agent_in_imagination(model, agent, train, args.agent_updates,
                               np.random.default_rng(args.seed),
                               torch.Generator().manual_seed(args.seed), [])
    path = args.out.with_name(args.out.stem + "_agent.npz")
    np.savez(path, **{k: v.numpy() for k, v in agent.state_dict().items()})
    path.with_suffix(".json").write_text(json.dumps(
        {"obs_dim": model.obs_dim, "low": space.low.tolist(), "high": space.high.tolist(),
         "agent_updates": args.agent_updates}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--source-h50", type=Path, required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", nargs="+", default=list(ROWS))
    parser.add_argument("--reference-model", type=Path, default=None)
    parser.add_argument("--train-reference", type=int, default=0, metavar="STEPS",
                        help="train the reference-size model for STEPS steps, save it to "
                        "--reference-model and stop")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-repeats", type=int, default=10)
    parser.add_argument("--tune-batches", type=int, default=5)
    parser.add_argument("--accuracy-starts", type=int, default=128)
    parser.add_argument("--agent-updates", type=int, default=300)
    parser.add_argument("--guidance-mode", default="sigma4", choices=("sigma4", "normalized"))
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--distill-updates", type=int, default=2000)
    parser.add_argument("--teacher-steps", type=int, default=8)
    parser.add_argument("--reuse-students", action="store_true")
    parser.add_argument("--distill-only", action="store_true",
                        help="distil the students of --rows, measure nothing")
    parser.add_argument("--accuracy-only", action="store_true",
                        help="measure accuracy (c) only: no timings, safe under load")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--agent-path", type=Path,
                        help="the critic and policy an earlier call wrote (its *_agent.npz): "
                        "reused instead of trained, so no simulator is needed for speed alone")
    args = parser.parse_args()
    if args.row:
        print(json.dumps(run_row(args)))
        return
    if args.train_reference:
        if args.reference_model is None:
            raise SystemExit("--train-reference needs --reference-model (where to save it)")
        train_reference(args)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    agent_path = args.agent_path or prepare_agent(args)
    distillation = {}
    for steps in sorted({int(r.split("/")[1].split(":")[1]) for r in args.rows
                         if r.split("/")[1].startswith("student:")}):
        distillation[steps] = distill(args.source, steps, args.distill_updates, args)
        distill(args.source_h50, steps, 0, args)
    if args.distill_only:
        return
    rows = []
    for name in args.rows:
        done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--row", name,
                               "--agent-path", str(agent_path)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"row {name} failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(table_line(rows[-1], rows[0]), flush=True)
    first = rows[0]
    if not args.accuracy_only:
        for row in rows:
            row["speedup_vs_first_row"] = row["transitions_per_s"] / first["transitions_per_s"]
            row["latency_ratio_vs_first_row"] = row["latency_h50_s"] / first["latency_h50_s"]
    args.out.write_text(json.dumps({
        "command": "benchmarks/sampling.py " + " ".join(sys.argv[1:]),
        "machine": {**machine_info(args.device), "threads": args.threads},  # per row process
        "source": source_version(),
        "distillation": distillation, "rows": rows}, indent=1))


def table_line(row: dict, first: dict) -> str:
    acc = (f"dyn err {row['dynamics_error']:.4f}  V {row['mean_value']:.2f}  "
           f"SAG lift {row['sag_value_lift']['mean']:+.3f}"
           if "dynamics_error" in row else "accuracy: untrained weights")
    speed = (f"{row['transitions_per_s']:9.0f} transitions/s "
             f"(×{row['transitions_per_s'] / first['transitions_per_s']:.1f})  "
             f"H=50 latency {1000 * row['latency_h50_s']:8.1f} ms  "
             f"peak {row['peak_memory_bytes'] / 2**20:7.1f} MiB  "
             if "transitions_per_s" in row else "")
    return f"{row['row']:30s} {row['network_calls']:4d} calls {speed}{acc}"


if __name__ == "__main__":
    main()
