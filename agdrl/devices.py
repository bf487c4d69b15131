"""The device a run asks for: whether this machine has it, and whether the networks of a config
fit in its memory, both checked before anything is allocated (an absurd width would otherwise
ask the allocator for hundreds of GB, or be killed by the kernel, with no word of which option
did it)."""

from __future__ import annotations

import os

import torch

from agdrl.config import ConfigError

TRAINING_COPIES = 4
"""Float32 copies of every trained parameter: the weights, their gradient and Adam's two
moments."""


def require_device(device: str) -> torch.device:
    """``device`` as a torch device, or ConfigError saying why this machine cannot use it."""
    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device {device!r} is not a torch device ({err}); use cpu, cuda, "
                          "cuda:N or mps") from err
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch was built without CUDA" if torch.version.cuda is None
                   else "no CUDA device is visible")
            raise ConfigError(f"device {device!r} is not available: {why}; use --device cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(f"device {device!r} is not available: this machine has {count} "
                              f"CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {device!r} is not available on this machine; use "
                              "--device cpu")
    elif parsed.type != "cpu":
        raise ConfigError(f"device {device!r}: agdrl runs on cpu, cuda or mps")
    return parsed


def memory_bytes(device: torch.device) -> int:
    """The memory of ``device``: a GPU's own, else the machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def require_fits(parameters: dict[str, int], device: torch.device, options: str) -> None:
    """ConfigError naming ``options`` unless training the networks of ``parameters`` (counts
    by network, each trained with :data:`TRAINING_COPIES` float32 copies) fits in the memory
    of ``device``."""
    need = 4 * TRAINING_COPIES * sum(parameters.values())
    have = memory_bytes(device)
    if need > have:
        parts = ", ".join(f"{name} {count / 1e9:.3g} G" for name, count in parameters.items())
        raise ConfigError(
            f"the networks would have {sum(parameters.values()) / 1e9:.3g} G parameters "
            f"({parts}): training them needs at least {need / 1e9:.3g} GB (weights, "
            f"gradients and Adam's moments in float32), more than the {have / 1e9:.3g} GB of "
            f"{device}; lower {options}")
