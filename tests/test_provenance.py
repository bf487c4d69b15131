"""Provenance recorded beside results: the source commit when run from a checkout, and a
graceful None where git or a checkout is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import agdrl
from agdrl.provenance import machine_info, source_version

PACKAGE = Path(agdrl.__file__).parent


def test_source_version_names_the_checkout_commit():
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE, capture_output=True,
                          text=True, check=False)
    if head.returncode != 0:
        pytest.skip("the package does not run from a git checkout")
    version = source_version()
    assert version["commit"] == head.stdout.strip() and len(version["commit"]) == 40
    assert isinstance(version["dirty"], bool) and version["agdrl"] == agdrl.__version__


def test_source_version_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert source_version() == {"agdrl": agdrl.__version__, "commit": None, "dirty": None}


def test_machine_info_has_no_paths():
    info = machine_info()
    assert info["cpus"] >= 1 and info["threads"] >= 1
    assert not any("/" in str(v) for k, v in info.items() if k != "platform")
    assert "device" not in info and machine_info("cpu")["device"] == "cpu"
    if torch.cuda.is_available():
        assert machine_info("cuda")["device"] == torch.cuda.get_device_name(0)
