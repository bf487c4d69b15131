"""Where a result came from: the machine and the source version that produced it, recorded
beside every benchmark result so that a number can be traced back (no machine paths)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from agdrl import __version__


def machine_info(device: torch.device | str | None = None) -> dict:
    """The platform, processor, core count, torch version and torch threads of this process,
    and, when ``device`` is given, its name (the GPU's for a CUDA device)."""
    info = {"platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    if device is not None:
        device = torch.device(device)
        info["device"] = (torch.cuda.get_device_name(device) if device.type == "cuda"
                          else "cpu")
    return info


def source_version() -> dict:
    """The package version and, when it runs from a git checkout, the commit and whether the
    package's tracked files had uncommitted changes (None outside a checkout or without git)."""
    here = Path(__file__).parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".") if commit else None
    return {"agdrl": __version__, "commit": commit,
            "dirty": None if status is None else bool(status)}
