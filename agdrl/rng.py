"""Seeded random draws that give the same numbers on every device.

The trainer seeds CPU ``torch.Generator`` objects. A draw made with such a generator directly
on a CUDA tensor's device fails, and one made on the generator's own device and then moved
gives the same numbers whatever device the models are on, so same-seed runs on CPU and GPU
draw alike. Every generator-seeded draw in the library goes through these helpers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypedDict

import numpy as np
import torch

from agdrl import distributed
from agdrl.checkpoint import load_tensors, save_tensors


def _draw_device(generator: torch.Generator | None, device: torch.device | str
                 ) -> torch.device | str:
    return generator.device if generator is not None else device


def randn(shape: tuple[int, ...], generator: torch.Generator | None,
          device: torch.device | str) -> torch.Tensor:
    """Standard normal noise of ``shape`` drawn on the generator's device, moved to ``device``."""
    return torch.randn(shape, generator=generator,
                       device=_draw_device(generator, device)).to(device)


def rand(shape: tuple[int, ...], generator: torch.Generator | None,
         device: torch.device | str) -> torch.Tensor:
    """Uniform [0, 1) samples of ``shape``, drawn as :func:`randn`."""
    return torch.rand(shape, generator=generator,
                      device=_draw_device(generator, device)).to(device)


def randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None,
            device: torch.device | str) -> torch.Tensor:
    """Integers in [0, high) of ``shape``, drawn as :func:`randn`."""
    return torch.randint(0, high, shape, generator=generator,
                         device=_draw_device(generator, device)).to(device)


class StreamsState(TypedDict):
    numpy_rng: dict


class RunStreams:
    """The random streams of a training run. One process: one numpy and one torch stream from
    the seed (acting shares the torch one; a chain captured in a CUDA graph draws from the
    device's default generator, which torch.manual_seed(seed) has seeded). Under torchrun
    every rank draws its own minibatches and imagination noise, while the acting noise is
    common to all ranks, whose copies of the environment must stay identical; ``step`` keys
    the streams of a resumed run."""

    STATE: ClassVar[type] = StreamsState

    def __init__(self, seed: int, step: int = 0, device: str = "cpu",
                 cuda_graph: bool = False):
        self.device, self.cuda_graph = device, cuda_graph
        if distributed.world_size() == 1:
            self.rng = np.random.default_rng(seed)
            self.generator = self.act_generator = torch.Generator().manual_seed(seed)
            return
        own = np.random.SeedSequence([seed, distributed.rank(), step])
        self.rng = np.random.default_rng(own)
        self.generator = torch.Generator().manual_seed(int(own.generate_state(1)[0]))
        common = np.random.SeedSequence([seed, step])
        self.act_generator = torch.Generator().manual_seed(int(common.generate_state(1)[0]))
        if cuda_graph:  # a captured chain draws its noise there
            torch.cuda.manual_seed(int(own.generate_state(2)[1]))

    def write_state(self, folder: Path) -> dict[str, Any]:
        streams = {"generator": self.generator.get_state(), "torch_global": torch.get_rng_state()}
        if self.cuda_graph:  # the captured chain's noise
            streams["torch_cuda"] = torch.cuda.get_rng_state(self.device)
        save_tensors(streams, folder / "rng.safetensors", {"kind": "rng"})
        return {"numpy_rng": self.rng.bit_generator.state}

    def read_state(self, folder: Path, state: dict[str, Any]) -> None:
        rng = load_tensors(folder / "rng.safetensors", "rng")
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch_global"])
        if "torch_cuda" in rng:
            torch.cuda.set_rng_state(rng["torch_cuda"], self.device)
        try:
            self.rng.bit_generator.state = state["numpy_rng"]
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"{folder / 'training_state.json'}: numpy_rng is not the state of "
                             f"a {type(self.rng.bit_generator).__name__} generator "
                             f"({type(err).__name__}: {err})") from err
