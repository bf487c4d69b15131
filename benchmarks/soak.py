"""Fault-injection soak: tiny training runs hit by a random fault at a random moment, then
resumed with ``agdrl resume`` until they finish; each trial reports what was lost.

Faults: SIGKILL; Ctrl-C (SIGINT: exit 130, one line); a full disk (the run directory on a
small tmpfs, enlarged before the resume; needs root to mount, skipped otherwise); the newest
checkpoint truncated or bit-flipped after a SIGKILL; a second writer (``agdrl train`` into the
running run's directory, with and without ``--overwrite``, and ``agdrl resume`` of it) while
the run trains. A trial passes when no process printed a traceback, the second writers were
refused naming the holder, every resume started at the newest checkpoint that verifies, the
logs hold each evaluation step once, and the final weights and evaluations equal those of a
run never disturbed (CPU, one thread: resumed runs are bit-identical). What a trial lost is
the checkpoints it fell back past and the steps after the newest one (under one interval).

    .venv/bin/python benchmarks/soak.py --trials 24 --out results/reliability/soak.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARGS = ["--env", "InvertedPendulum-v5", "--total-steps", "600", "--prefill-steps", "120",
        "--pretrain-steps", "10", "--eval-every", "200", "--eval-episodes", "2",
        "--checkpoint-every", "40", "--keep-checkpoints", "2",
        "--diffusion.num-steps", "8", "--diffusion.batch-size", "32",
        "--diffusion.denoiser.width", "32", "--diffusion.denoiser.depth", "1",
        "--agent.hidden", "16", "--imagination.batch-size", "32",
        "--imagination.sampler", "ddim", "--imagination.sampler-steps", "2"]
"""A run of a few seconds with a checkpoint every 40 steps (the tests' kill-and-resume run)."""

INTERVAL = 40
TOTAL = 600
EVALUATIONS = [200, 400, 600]

FAULTS = ("sigkill", "sigint", "full_disk", "truncated", "bit_flip", "second_writer")

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def agdrl(*args: str) -> subprocess.Popen:
    # a shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT
    # ignored: restore it, or a soak run with nohup … & could not Ctrl-C its runs
    return subprocess.Popen([sys.executable, "-m", "agdrl", *args], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def steps(run: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in (run / "checkpoints").glob("step_*")
                  if (p / "training_state.json").exists())


def wait_for_checkpoint(proc: subprocess.Popen, run: Path, at_least: int) -> bool:
    """Wait until a checkpoint at or after ``at_least`` exists; False if the run ended."""
    deadline = time.monotonic() + 300
    while not (steps(run) and steps(run)[-1] >= at_least):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def damage(run: Path, rng: random.Random, kind: str) -> str:
    """Truncate or flip a byte of a random file of the newest checkpoint; says which."""
    newest = run / "checkpoints" / f"step_{steps(run)[-1]:09d}"
    files = sorted(p for p in newest.iterdir() if p.name != "manifest.json")
    target = rng.choice(files)
    data = bytearray(target.read_bytes())
    if kind == "truncated":
        target.write_bytes(bytes(data[: rng.randrange(len(data))]))
    else:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(data))
    return f"{newest.name}/{target.name}"


def column(path: Path, name: str = "env_step") -> list[float]:
    try:
        with open(path, newline="") as f:
            return [float(r[name]) for r in csv.DictReader(f)]
    except FileNotFoundError:
        return []


def trial(index: int, fault: str, root: Path, rng: random.Random, can_mount: bool) -> dict:
    """One run, one fault, resumed to the end; what happened and what was lost."""
    folder = root / f"trial{index:02d}"
    folder.mkdir()
    run = folder / "run"
    report: dict = {"trial": index, "fault": fault, "problems": []}
    mounted = None
    if fault == "full_disk":
        if not can_mount:
            return {**report, "skipped": "mounting a tmpfs needs root"}
        mounted = folder / "disk"
        mounted.mkdir()
        size_kb = rng.randrange(500, 2000)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs",
                        str(mounted)], check=True)
        run = mounted / "run"
        report["disk_kb"] = size_kb
    errors: list[str] = []
    try:
        proc = agdrl("train", "--run-dir", str(run), *ARGS)
        # a second writer must find the run still going: its own start takes seconds
        latest = TOTAL // 4 if fault == "second_writer" else TOTAL - INTERVAL
        at = rng.choice(range(INTERVAL, latest, INTERVAL))
        if fault == "full_disk":
            _, err = proc.communicate(timeout=600)
            errors.append(err)
            report["returncode"] = proc.returncode
            if proc.returncode == 0:
                report["problems"].append("the disk never filled")
            else:
                report["message"] = err.replace("\r", "\n").strip().splitlines()[-1]
                if not report["message"].startswith("agdrl: ") or \
                        "No space left on device" not in report["message"]:
                    report["problems"].append(f"unclear message: {err.strip()[-300:]}")
                report["newest_checkpoint_at_fault"] = (steps(run) or [0])[-1]
            subprocess.run(["mount", "-o", "remount,size=256m", str(mounted)], check=True)
        elif wait_for_checkpoint(proc, run, at):
            report["fault_after_checkpoint"] = at
            time.sleep(rng.uniform(0.0, 0.3))
            newest_at_fault = steps(run)[-1]
            report["newest_checkpoint_at_fault"] = newest_at_fault
            if fault == "second_writer":
                second = [agdrl("train", "--run-dir", str(run), *ARGS),
                          agdrl("train", "--run-dir", str(run), "--overwrite", *ARGS),
                          agdrl("resume", str(run))]
                for p in second:  # all three at once, while the run trains
                    _, err = p.communicate(timeout=300)
                    errors.append(err)
                    if p.returncode == 0 or f"pid {proc.pid}" not in err:
                        report["problems"].append(f"second writer not refused: {err[-600:]}")
                if proc.poll() is not None:
                    report["problems"].append("the run ended before its second writers were "
                                              "answered: the trial tested nothing")
                _, err = proc.communicate(timeout=600)
                errors.append(err)
                report["returncode"] = proc.returncode
            else:
                proc.send_signal(signal.SIGINT if fault == "sigint" else signal.SIGKILL)
                _, err = proc.communicate(timeout=120)
                errors.append(err)
                report["returncode"] = proc.returncode
                if fault == "sigint":
                    last = [ln for ln in err.replace("\r", "\n").splitlines()
                            if ln.startswith("agdrl")]
                    if proc.returncode != 130 or len(last) != 1:
                        report["problems"].append(f"Ctrl-C: rc {proc.returncode}, {last}")
                if fault in ("truncated", "bit_flip"):
                    report["damaged"] = damage(run, rng, fault)
        else:
            _, err = proc.communicate()
            errors.append(err)
            report["problems"].append(f"the run ended before the fault: {err[-300:]}")
        resumes = []
        while not (run / "model").is_dir() and len(resumes) < 3:
            before = steps(run)
            p = agdrl("resume", str(run))
            _, err = p.communicate(timeout=600)
            errors.append(err)
            resumes.append({"returncode": p.returncode, "checkpoints_before": before})
        report["resumes"] = resumes
        report["finished"] = (run / "model").is_dir()
        report.update(check(run, report))
    finally:
        if mounted is not None:
            keep = folder / "run"
            if run.exists():
                shutil.copytree(run, keep)
            subprocess.run(["umount", str(mounted)], check=False)
    if any("Traceback" in e for e in errors):
        report["problems"].append("a traceback: " + next(e for e in errors if "Traceback" in e)
                                  [-400:])
    report["passed"] = not report["problems"]
    return report


def check(run: Path, report: dict) -> dict:
    """The run's logs and checkpoints: each evaluation once, its own task throughout."""
    problems = report["problems"]
    evaluations = [int(s) for s in column(run / "evaluations.csv")]
    if evaluations != EVALUATIONS:
        problems.append(f"evaluations at {evaluations}, expected {EVALUATIONS}")
    logged = column(run / "train_metrics.csv")
    if logged != sorted(set(logged)):
        problems.append("a training step logged twice")
    envs = {json.loads((p / "config.json").read_text())["config"]["env"]
            for p in [run / "model", *(run / "checkpoints").glob("step_*")]
            if (p / "config.json").exists()}
    if envs != {"InvertedPendulum-v5"}:
        problems.append(f"checkpoints of tasks {envs}")
    lost = {}
    if "newest_checkpoint_at_fault" in report and report.get("resumes"):
        before = report["resumes"][0]["checkpoints_before"]
        resumed_from = before[-1] if before else 0
        if report.get("damaged"):  # the damaged checkpoint was skipped: the one before it
            resumed_from = before[-2] if len(before) > 1 else 0
        lost = {"checkpoints_fallen_back_past": sum(s > resumed_from for s in before),
                "resumed_from_step": resumed_from,
                "steps_redone_at_most": report["newest_checkpoint_at_fault"] - resumed_from
                + INTERVAL}
    return {"evaluations": evaluations, "lost": lost}


def identical(run: Path, reference: Path) -> bool:
    """Same final agent weights and evaluation returns as the undisturbed run."""
    from safetensors.torch import load_file

    a = load_file(str(run / "model" / "agent.safetensors"))
    b = load_file(str(reference / "model" / "agent.safetensors"))
    same = a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    return same and column(run / "evaluations.csv", "mean_return") == column(
        reference / "evaluations.csv", "mean_return")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp())
    can_mount = os.geteuid() == 0
    reference = root / "reference"
    subprocess.run([sys.executable, "-m", "agdrl", "train", "--run-dir", str(reference),
                    *ARGS], check=True, env=ENV, capture_output=True)
    reports = []
    for i in range(args.trials):
        report = trial(i, FAULTS[i % len(FAULTS)], root, rng, can_mount)
        kept = root / f"trial{i:02d}" / "run"
        if report.get("finished") and kept.exists() and not identical(kept, reference):
            report["problems"].append("final weights or evaluations differ from the "
                                      "undisturbed run")
            report["passed"] = False
        reports.append(report)
        print(json.dumps({k: report.get(k) for k in ("trial", "fault", "passed", "lost",
                                                     "skipped", "problems")}), flush=True)
    ran = [r for r in reports if "skipped" not in r]
    summary = {"trials": len(ran), "passed": sum(r["passed"] for r in ran),
               "skipped": len(reports) - len(ran),
               "by_fault": {f: sum(r["fault"] == f for r in ran) for f in FAULTS},
               "most_checkpoints_fallen_back_past": max(
                   [r["lost"].get("checkpoints_fallen_back_past", 0) for r in ran] or [0]),
               "checkpoint_interval": INTERVAL,
               "command": f".venv/bin/python benchmarks/soak.py --trials {args.trials} "
                          f"--seed {args.seed} --out {args.out}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "trials": reports}, indent=1))
    print(json.dumps(summary))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
