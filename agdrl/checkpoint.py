"""Checkpoint files: module weights and optimizer states as safetensors with a JSON header
(never pickle), and directories written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn


def _write(tensors: dict[str, torch.Tensor], path: str | Path, meta: dict[str, Any]) -> None:
    """``save_file`` whose write errors (a full disk) are OSErrors, as every other file's."""
    try:
        save_file(tensors, str(path), metadata={"agdrl": json.dumps(meta)})
    except SafetensorError as err:
        raise OSError(f"cannot write {path}: {err}") from err


def save_module(module: nn.Module, path: str | Path, meta: dict[str, Any]) -> None:
    """Write ``module.state_dict()`` and a JSON-serializable ``meta`` dict to ``path``."""
    _write({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, path,
           meta)


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path``; a ValueError naming the file when it is missing, unreadable,
    not UTF-8 text or not JSON (replaced by binary data, truncated, edited by hand)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ValueError(f"{path} is missing") from err
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not JSON text (byte {err.start} is not UTF-8): damaged, "
                         "or not a file agdrl wrote") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column "
                         f"{err.colno})") from err


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


@contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Write a whole directory or nothing: files go into a hidden temporary sibling
    (``.tmp-NAME-PID``), get a ``manifest.json`` of their SHA-256 sums, are fsynced, and the
    folder is renamed into place, so a crash leaves either the previous ``final`` or the new
    one, never a partial one. An existing ``final`` is moved aside first and removed after the
    rename. Readers skip ``.tmp-*`` folders; :func:`verify_manifest` detects later damage."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        (tmp / MANIFEST).write_text(json.dumps(
            {str(p.relative_to(tmp)): _sha256(p) for p in files}, indent=1))
        for path in tmp.rglob("*"):
            if path.is_file():
                _fsync(path)
        _fsync(tmp)
        old = final.parent / f".tmp-old-{final.name}-{os.getpid()}"
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync(final.parent)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_manifest(folder: str | Path) -> None:
    """Check every file listed in ``folder``'s manifest against its SHA-256 sum; raise
    ValueError naming the first missing or damaged file. Folders without a manifest (written
    by hand) pass."""
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        return
    manifest = read_json(folder / MANIFEST)
    if not (isinstance(manifest, dict) and all(isinstance(v, str) for v in manifest.values())):
        raise ValueError(f"{folder / MANIFEST} must map file names to SHA-256 sums")
    for name, digest in manifest.items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{folder}: {name} is missing")
        if _sha256(path) != digest:
            raise ValueError(f"{folder}: {name} is damaged (its SHA-256 differs from the "
                             "one recorded when it was written)")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_optimizers(optimizers: dict[str, torch.optim.Optimizer], path: str | Path) -> None:
    """Optimizer states (Adam moments, step counts, hyper-parameters) as safetensors: tensors
    under ``NAME/PARAM_INDEX/KEY``, everything else in the JSON header."""
    tensors, meta = {}, {}
    for name, opt in optimizers.items():
        state = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, entries in state["state"].items():
            for key, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"{name}/{index}/{key}"] = value.detach().contiguous().cpu()
                else:
                    scalars.setdefault(str(index), {})[key] = value
        meta[name] = {"param_groups": state["param_groups"], "scalars": scalars}
    _write(tensors, path, {"kind": "optimizers", "optimizers": meta})


def load_optimizers(optimizers: dict[str, torch.optim.Optimizer], path: str | Path,
                    device: torch.device | str) -> None:
    """Restore the states written by :func:`save_optimizers` (names must match)."""
    meta = read_meta(path, "optimizers")["optimizers"]
    if set(meta) != set(optimizers):
        raise ValueError(f"{path} holds optimizers {sorted(meta)}, expected "
                         f"{sorted(optimizers)}")
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read optimizer states from {path}: {err}") from err
    for name, opt in optimizers.items():
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            owner, index, entry = key.split("/", 2)
            if owner == name:
                state.setdefault(int(index), {})[entry] = value
        for index, entries in meta[name]["scalars"].items():
            state.setdefault(int(index), {}).update(entries)
        opt.load_state_dict({"state": state, "param_groups": meta[name]["param_groups"]})


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, meta: dict[str, Any]
                 ) -> None:
    """Plain named tensors (e.g. random-generator states) with a JSON header."""
    _write({k: v.contiguous().cpu() for k, v in tensors.items()}, path, meta)


def load_tensors(path: str | Path, kind: str) -> dict[str, torch.Tensor]:
    """Tensors written by :func:`save_tensors` whose header says ``kind``."""
    read_meta(path, kind)
    return load_file(str(path))


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete ``checkpoints/step_*`` of a run, oldest first (temporary folders of an
    interrupted write are never taken)."""
    return [p for p in sorted(Path(run_dir, "checkpoints").glob("step_*"))
            if (p / "training_state.json").is_file()]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    complete = complete_checkpoints(run_dir)
    return complete[-1] if complete else None
