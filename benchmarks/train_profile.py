"""Env steps per second of the AGD-MBRL loop per preset, and where the time goes.

For each preset: random-action prefill (not timed), then ``--steps`` learning steps whose
wall-clock is split into environment, diffusion-model training, imagination sampling, guidance
hooks, actor-critic update (evaluation is switched off). Run it alone on the machine (DESIGN
§6): contention distorts timings by several times.

    .venv/bin/python benchmarks/train_profile.py --env Hopper-v5 --presets fast paper \\
        --steps 400 40 --out results/speed/train_profile_hopper.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from agdrl import AGDMBRL, PRESETS, TrainConfig
from agdrl.provenance import machine_info


def override(cfg: Any, path: str, value: str) -> Any:
    """``cfg`` with the (nested, dotted) field ``path`` set to ``value`` (JSON, else a string)."""
    head, _, rest = path.partition(".")
    if rest:
        return dataclasses.replace(cfg, **{head: override(getattr(cfg, head), rest, value)})
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return dataclasses.replace(cfg, **{head: parsed})


def preset_config(spec: str) -> TrainConfig:
    """``PRESET[:a.b=VALUE...]`` -> the preset's config with those fields set."""
    name, *assignments = spec.split(":")
    cfg = PRESETS[name]
    for assignment in assignments:
        path, _, value = assignment.partition("=")
        cfg = override(cfg, path, value)
    return cfg


def profile(env: str, preset: str, steps: int, prefill: int, seed: int) -> dict:
    cfg = dataclasses.replace(preset_config(preset), env=env, seed=seed, prefill_steps=prefill,
                              eval_every=0, total_steps=prefill + steps)
    model = AGDMBRL(env, cfg)
    model.learn(prefill)  # random actions, then the pretraining of the world model
    model.evaluate = lambda *args, **kwargs: [0.0]  # the final evaluation is not timed
    before = model.time_profile()
    start = time.perf_counter()
    model.learn(steps)
    wall = time.perf_counter() - start
    after = model.time_profile()
    seconds = {k: after[k] - before[k] for k in after if k != "evaluation"}
    return {"preset": preset, "env": env, "steps": steps, "wall_s": wall,
            "env_steps_per_s": steps / wall, "seconds_per_env_step": wall / steps,
            "seconds_per_env_step_by_phase": {k: v / steps for k, v in seconds.items()},
            "fraction_by_phase": {k: v / wall for k, v in seconds.items()},
            "config": dataclasses.asdict(model.cfg)}


def table(rows: list[dict]) -> str:
    phases = list(rows[0]["fraction_by_phase"])
    lines = ["| preset | env steps/s | s per env step | " + " | ".join(phases) + " |",
             "|---|---|---|" + "---|" * len(phases)]
    for r in rows:
        fractions = " | ".join(f"{100 * r['fraction_by_phase'][p]:.0f}%" for p in phases)
        lines.append(f"| {r['preset']} | {r['env_steps_per_s']:.2f} | "
                     f"{r['seconds_per_env_step']:.3f} | {fractions} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--presets", nargs="+", default=["fast", "paper"])
    parser.add_argument("--steps", nargs="+", type=int, default=[400, 40],
                        help="timed learning steps per preset (one value, or one per preset)")
    parser.add_argument("--prefill", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps * len(args.presets) if len(args.steps) == 1 else args.steps
    if len(steps) != len(args.presets):
        parser.error("--steps needs one value or one per preset")
    rows = []
    for preset, n in zip(args.presets, steps, strict=True):
        rows.append(profile(args.env, preset, n, args.prefill, args.seed))
        print(f"{preset}: {rows[-1]['env_steps_per_s']:.2f} env steps/s", flush=True)
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "machine": machine_info(),
            "command": "benchmarks/train_profile.py " + " ".join(
                f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in vars(args).items() if v is not None),
            "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
