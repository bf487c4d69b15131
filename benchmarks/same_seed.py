"""Same-seed fingerprints of short runs of every world model, to compare two versions of the
code bit for bit: the evaluations, the last logged training metrics, and a SHA-256 of every
weight after ``--steps`` steps of the ``tiny`` preset on InvertedPendulum-v5.

    python benchmarks/same_seed.py --out results/restructure/after.json
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

import torch

from agdrl import AGDMBRL, PRESETS

VARIANTS = {
    "diffusion-sag": {},
    "diffusion-heads-gae": {"imagination": {"advantage": "gae"},
                            "experimental": {"termination": "classifier", "reward": "regressor"}},
    "diffusion-cfg": {"imagination": {"guidance": "cfg"}},
    "diffusion-qv-eag": {"imagination": {"guidance": "eag", "advantage": "qv"}},
    "ensemble": {"world_model": "ensemble", "imagination": {"guidance": "none"}},
}


def config(overrides: dict, steps: int):
    cfg = dataclasses.replace(PRESETS["tiny"], total_steps=steps, eval_every=steps // 2,
                              checkpoint_every=steps // 2)
    experimental = dataclasses.replace(cfg.imagination.experimental,
                                       **overrides.get("experimental", {}))
    imagination = dataclasses.replace(cfg.imagination, experimental=experimental,
                                      **overrides.get("imagination", {}))
    rest = {k: v for k, v in overrides.items() if k not in ("imagination", "experimental")}
    return dataclasses.replace(cfg, imagination=imagination, **rest)


def fingerprint(model: AGDMBRL, run_dir: Path) -> dict:
    digest = {}
    # the network itself (before the restructure model.world_model was the network)
    network = getattr(model.world_model, "network", model.world_model)
    for name, module in (("world_model", network), ("agent", model.agent)):
        h = hashlib.sha256()
        for key, tensor in sorted(module.state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest[name] = h.hexdigest()[:16]
    with open(run_dir / "evaluations.csv", newline="") as f:
        evaluations = [{k: v for k, v in row.items() if k != "wall_s"}
                       for row in csv.DictReader(f)]
    with open(run_dir / "train_metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    timing = ("time_fraction", "env_steps_per_s")  # wall-clock: differs from run to run
    return {"evaluations": evaluations,
            "last_train_metrics": {k: v for k, v in last.items() if not k.startswith(timing)},
            "weights": digest}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    out = {}
    for name, overrides in VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / "run"
            model = AGDMBRL("InvertedPendulum-v5", config(overrides, args.steps), run_dir=run_dir)
            model.learn(args.steps)
            out[name] = fingerprint(model, run_dir)
            model.close()
        print(name, out[name]["weights"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
