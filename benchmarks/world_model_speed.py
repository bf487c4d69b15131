"""Wall-clock of the diffusion world model: one training step and sampling, per denoiser.

Measures, in one run, for each denoiser (MLP, temporal U-Net, transformer) at the reference
size and at our default size, on Hopper's dimensions (ds = 11, da = 3):
  - one training step at batch 256, H = 10;
  - sampling 256 segments of H = 10 with 128-step DDPM and with few-step DDIM;
  - latency of one H = 50 trajectory (batch 1) at each sampler setting.
Each figure is the median of ``--repeats`` timings after one warm-up. Run it with nothing else
busy on the machine (DESIGN §6): contention distorts small-op timings by several times.

    .venv/bin/python benchmarks/world_model_speed.py --out results/speed/world_model_speed.json
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch

from agdrl.buffer import SegmentBatch
from agdrl.config import DenoiserConfig, DiffusionConfig, reference_denoiser
from agdrl.diffusion.world_model import DiffusionWorldModel
from agdrl.provenance import machine_info, source_version

sys.path.insert(0, str(Path(__file__).parent))
from common import timed

OBS_DIM, ACTION_DIM = 11, 3
SIZES = {
    # reference: the papers' MLP; Diffuser's U-Net (32 × (1, 2, 4, 8)); a 6-layer transformer
    "reference": {"mlp": reference_denoiser(),
                  "unet": DenoiserConfig("unet", 32, 4),
                  "transformer": DenoiserConfig("transformer", 256, 6, heads=8)},
    "default": {"mlp": DenoiserConfig("mlp", 512, 4),
                "unet": DenoiserConfig("unet", 32, 3),
                "transformer": DenoiserConfig("transformer", 128, 3)},
}


def random_batch(b: int, h: int, rng: np.random.Generator) -> SegmentBatch:
    return SegmentBatch(rng.standard_normal((b, h, OBS_DIM)).astype(np.float32),
                        rng.uniform(-1, 1, (b, h, ACTION_DIM)).astype(np.float32),
                        rng.standard_normal((b, h)).astype(np.float32),
                        np.zeros((b, h), np.float32), np.ones((b, h), np.float32), None)


def table(result: dict) -> str:
    """Markdown table of a saved result (seconds; latency in milliseconds)."""
    rows = result["rows"]
    steps = [k.split("_")[2].removesuffix("_s") for k in rows[0] if k.startswith("sample_")]
    head = ["size", "denoiser", "params (H=10)", "train step b256 (s)"]
    head += [f"256×H10 {s} (s)" for s in steps] + [f"1×H50 {s} (ms)" for s in steps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["size"], f"{r['kind']} {r['width']}×{r['depth']}", f"{r['params_h10']:,}",
                 f"{r['train_step_b256_h10_s']:.4f}"]
        cells += [f"{r[f'sample_256x10_{s}_s']:.3f}" for s in steps]
        cells += [f"{1000 * r[f'latency_1x50_{s}_s']:.1f}" for s in steps]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sampler_name(n: int) -> str:
    """128 steps is the reference's full ancestral chain; fewer steps use DDIM."""
    return f"ddpm{n}" if n == 128 else f"ddim{n}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, nargs="+", default=[128, 32, 16, 8, 4, 2])
    parser.add_argument("--kinds", nargs="+", default=["mlp", "unet", "transformer"])
    parser.add_argument("--sizes", nargs="+", default=["reference", "default"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("results/speed/world_model_speed.json"))
    parser.add_argument("--table", type=Path, help="print the table of a saved result and exit")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rows = []

    def train(wm: DiffusionWorldModel, batch: SegmentBatch) -> None:
        wm.train_step(batch)
        sync()

    def sample(wm: DiffusionWorldModel, s0: torch.Tensor, acts: torch.Tensor, n: int) -> None:
        wm.sample(s0, wm.default_sampler("ddpm" if n == 128 else "ddim", n), actions=acts)
        sync()

    for size in args.sizes:
        for kind in args.kinds:
            dcfg = SIZES[size][kind]
            row: dict = {"size": size, "kind": kind, "width": dcfg.width, "depth": dcfg.depth}
            wm = DiffusionWorldModel(OBS_DIM, ACTION_DIM,
                                     DiffusionConfig(horizon=10, denoiser=dcfg), dev)
            row["params_h10"] = sum(p.numel() for p in wm.diffusion.denoiser.parameters())
            batch = random_batch(256, 10, rng)
            row["train_step_b256_h10_s"] = timed(partial(train, wm, batch), args.repeats)
            s0 = torch.randn(256, OBS_DIM, device=dev)
            acts = torch.rand(256, 10, ACTION_DIM, device=dev) * 2 - 1
            for n in args.steps:
                row[f"sample_256x10_{sampler_name(n)}_s"] = timed(
                    partial(sample, wm, s0, acts, n), args.repeats)
            wm50 = DiffusionWorldModel(OBS_DIM, ACTION_DIM,
                                       DiffusionConfig(horizon=50, denoiser=dcfg), dev)
            row["params_h50"] = sum(p.numel() for p in wm50.diffusion.denoiser.parameters())
            s0 = torch.randn(1, OBS_DIM, device=dev)
            acts = torch.rand(1, 50, ACTION_DIM, device=dev) * 2 - 1
            for n in args.steps:
                row[f"latency_1x50_{sampler_name(n)}_s"] = timed(
                    partial(sample, wm50, s0, acts, n), args.repeats)
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {"machine": machine_info(dev), "source": source_version(),
              "repeats": args.repeats, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(table(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
