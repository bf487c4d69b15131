"""Saving and loading module weights as safetensors with a JSON header (never pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn


def save_module(module: nn.Module, path: str | Path, meta: dict[str, Any]) -> None:
    """Write ``module.state_dict()`` and a JSON-serializable ``meta`` dict to ``path``."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"agdrl": json.dumps(meta)})


def read_meta(path: str | Path, kind: str) -> dict[str, Any]:
    """The JSON header of a file written by :func:`save_module`, checked to be of ``kind``."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["agdrl"])
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path} is not a valid agdrl {kind} file: {err}") from err
    if meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r}, not a {kind!r}")
    return meta


def load_weights(module: nn.Module, path: str | Path, device: torch.device | str) -> None:
    """Load weights written by :func:`save_module` into ``module`` (strict)."""
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read weights from {path}: {err}") from err
    module.load_state_dict(state)
