"""Kill/resume trials: a real ``agdrl train`` process is SIGKILLed at random moments and resumed
with ``agdrl resume`` each time; at the end the run is compared with one that was never
killed. Reports, per kill, the newest complete checkpoint, whether a checkpoint write was in
flight, and the work lost (wall-clock since the newest checkpoint was written).

    .venv/bin/python benchmarks/kill_resume.py --trials 10 \
        --out results/reliability/kill_resume.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from agdrl import AGDMBRL
from agdrl.checkpoint import latest_checkpoint

ARGS = ["--env", "InvertedPendulum-v5", "--total-steps", "6000", "--prefill-steps", "200",
        "--pretrain-steps", "50", "--eval-every", "500", "--eval-episodes", "3",
        "--checkpoint-every", "100", "--keep-checkpoints", "2",
        "--diffusion.num-steps", "16", "--diffusion.batch-size", "64",
        "--diffusion.denoiser.width", "64", "--diffusion.denoiser.depth", "2",
        "--agent.hidden", "32", "--imagination.batch-size", "64",
        "--imagination.sampler", "ddim", "--imagination.sampler-steps", "4"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agdrl", *args], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def evaluations(run: Path) -> list[tuple[str, str]]:
    with open(run / "evaluations.csv") as f:
        return [(r["env_step"], r["mean_return"]) for r in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill-resume-"))
    run, trials = work / "killed", []
    resumed = 0
    for trial in range(args.trials):
        proc = train(["resume", str(run)] if trial else ["train", "--run-dir", str(run), *ARGS])
        # wait for the first checkpoint after the resume point, then a random moment
        while (latest_checkpoint(run) is None
               or int(latest_checkpoint(run).name[5:]) <= resumed):
            if proc.poll() is not None:
                raise SystemExit("the run ended before all trials: raise --total-steps")
            time.sleep(0.01)
        delay = rng.uniform(0.0, 3.0)
        time.sleep(delay)
        if proc.poll() is not None:
            raise SystemExit("the run ended before all trials: raise --total-steps")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = time.time()
        newest = latest_checkpoint(run)
        in_flight = [p.name for p in run.glob("checkpoints/.tmp-*")]
        resumed = AGDMBRL.resume(run).num_timesteps if newest else 0
        trials.append({
            "trial": trial, "kill_s_after_a_new_checkpoint": round(delay, 2),
            "newest_checkpoint": newest.name if newest else None,
            "checkpoint_write_in_flight": bool(in_flight),
            "resumes_at_step": resumed,
            "resumes_at_newest": newest is not None and resumed == int(newest.name[5:]),
            "lost_wall_s": round(killed_at - newest.stat().st_mtime, 2) if newest else None})
        print(trials[-1], flush=True)
    subprocess.run([sys.executable, "-m", "agdrl", "resume", str(run)], env=ENV,
                   check=True, capture_output=True)
    clean = work / "clean"
    subprocess.run([sys.executable, "-m", "agdrl", "train", "--run-dir", str(clean), *ARGS],
                   env=ENV, check=True, capture_output=True)
    a, b = AGDMBRL.load(run / "model"), AGDMBRL.load(clean / "model")
    identical = all(torch.equal(p, q) for p, q in zip(a.agent.state_dict().values(),
                                                       b.agent.state_dict().values(),
                                                       strict=True))
    with open(run / "train_metrics.csv") as f:
        steps = [int(r["env_step"]) for r in csv.DictReader(f)]
    result = {"command": "benchmarks/kill_resume.py " + " ".join(sys.argv[1:]),
              "train_args": ARGS, "trials": trials,
              "final_weights_identical_to_uninterrupted": identical,
              "evaluations_identical": evaluations(run) == evaluations(clean),
              "train_steps_logged_twice": len(steps) - len(set(steps))}
    print({k: v for k, v in result.items() if k != "trials"})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
