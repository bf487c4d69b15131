"""What each bad command line produces: runs ``agdrl`` in-process on a list of bad inputs and
writes the one-line message (and exit status) of each as a markdown table.

    .venv/bin/python benchmarks/bad_inputs.py --out results/reliability/bad_inputs.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

from agdrl.cli import main

BAD = [
    ["train", "--total-steps", "0"],
    ["train", "--total-steps", "-5"],
    ["train", "--total-steps", "abc"],
    ["train", "--prefill-steps", "50000"],
    ["train", "--diffusion.horizon", "1"],
    ["train", "--diffusion.num-steps", "0"],
    ["train", "--imagination.sampler-steps", "500"],
    ["train", "--imagination.batch-size", "0"],
    ["train", "--guidance", "magic"],
    ["train", "--advantage", "mc"],
    ["train", "--imagination.sampler", "euler"],
    ["train", "--agent.gamma", "1.5"],
    ["train", "--agent.gamma", "nan"],
    ["train", "--agent.min-std", "2", "--agent.init-std", "1"],
    ["train", "--diffusion.ema-decay", "1"],
    ["train", "--diffusion.layout", "joint"],
    ["train", "--diffusion.denoiser.kind", "transformer", "--diffusion.denoiser.width", "30",
     "--diffusion.denoiser.heads", "4"],
    ["train", "--on-nonfinite", "ignore"],
    ["train", "--env", "NoSuchEnv-v0", "--total-steps", "10", "--prefill-steps", "5"],
    ["train", "--env", "CartPole-v1", "--total-steps", "10", "--prefill-steps", "5"],
    ["train", "turbo"],
    ["train", "--no-such-option", "3"],
    ["resume", "RUNS/does-not-exist"],
    ["resume", "RUNS/x", "--guidance", "eag"],
    ["train", "--run-dir", "FILE/run", "--total-steps", "10", "--prefill-steps", "5"],
    ["eval", "RUNS/does-not-exist"],
    ["eval", "RUNS/x", "--episodes", "0"],
    ["avalanche", "--train-steps", "0"],
    ["avalanche", "--behavior", "random", "--samplers", "euler:4"],
    ["avalanche", "--behavior", "random", "--env", "CartPole-v1"],
    ["nonsense"],
]


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "file").write_text("a file, not a directory")
    lines = ["| command line | exit | message |", "|---|---|---|"]
    for argv in BAD:
        argv = [a.replace("RUNS", str(tmp)).replace("FILE", str(tmp / "file")) for a in argv]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                code, message = main(argv), "(no error)"
            except SystemExit as exit_:
                code = 1 if isinstance(exit_.code, str) else exit_.code
                message = exit_.code if isinstance(exit_.code, str) else err.getvalue().strip()
        shown = " ".join(a.replace(str(tmp), "…") for a in argv)
        message = str(message).replace(str(tmp), "…").replace("|", "\\|")
        lines.append(f"| `agdrl {shown}` | {code} | {message} |")
        print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main_()
