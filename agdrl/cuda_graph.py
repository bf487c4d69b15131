"""The guided chain captured in a CUDA graph and replayed.

At small batches a GPU spends a guided chain launching kernels rather than computing: about
1,400 launches per guided H = 50 trajectory of the fast preset, 26.6 ms on an H200 against
16 ms on a 2-core CPU (docs/speed.md, "On a GPU"). A CUDA graph records one call's
launches once and replays them all with one. What that asks of the chain, and how agdrl's
chain meets it:

- no host-device synchronization inside: the guidance hooks keep their diagnostics as
  tensors and put off their finite checks while capturing (:func:`capturing`);
- fixed addresses: the input is copied into a static tensor; the optimizers and the EMA
  update parameters in place; the graph reads private copies of the normalizers' statistics,
  refreshed in place before every replay;
- random draws from the device's default generator: a graph replays its draws with fresh
  numbers only from that generator, and a draw from one of the trainer's CPU generators
  would be a host-to-device copy, which a graph cannot hold.

Python values the chain reads are frozen at capture: the sampler's grid and constants, the
guidance scale, policy guidance's relaxation (so PolyGRAD's 'pull' mode, whose step δ adapts
between calls, is not captured: :class:`agdrl.config.ImaginationConfig`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from agdrl.normalization import RunningNormalizer


def capturing(t: torch.Tensor) -> bool:
    """Whether ``t``'s device is capturing a CUDA graph on the current stream (then nothing
    may be read back to the host)."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


class CapturedChain:
    """``fn(x)``, a function of one CUDA tensor that returns a tuple of tensors, captured in a
    CUDA graph per input shape on its first call with that shape and replayed after.

    modules: whose :class:`RunningNormalizer` statistics ``fn`` reads. The graph reads private
    copies of them (:meth:`RunningNormalizer.private_stats`), into which every call writes
    the current statistics before it replays.
    attributes: ``(object, name)`` pairs that ``fn`` rebinds to tensors of the chain (a hook's
    noise or diagnostics); after a replay they are bound again to the tensors of the replayed
    graph, which the replay has just rewritten, so that reading them gives this call's values
    whichever graph ran last.
    warmup: eager calls on a side stream before the capture (lazy initializations such as
    cuBLAS workspaces must not happen inside it); their random draws are given back.

    Each call returns fresh copies of the graph's outputs: the next replay overwrites them.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Sequence[torch.Tensor]],
                 modules: Iterable[nn.Module],
                 attributes: Iterable[tuple[object, str]] = (), warmup: int = 2):
        self.fn, self.warmup = fn, warmup
        self.normalizers = list(dict.fromkeys(  # each once, in order
            m for module in modules for m in module.modules() if isinstance(m, RunningNormalizer)))
        self.attributes = list(attributes)
        self.graphs: dict[tuple[int, ...], _Graph] = {}

    def _capture(self, x: torch.Tensor) -> _Graph:
        rng_state = torch.cuda.get_rng_state(x.device)
        static_x = x.clone()
        graph = torch.cuda.CUDAGraph()
        current = torch.cuda.current_stream(x.device)
        try:
            with ExitStack() as private:
                stats = [private.enter_context(norm.private_stats(torch.float32))
                         for norm in self.normalizers]
                side = torch.cuda.Stream(x.device)
                side.wait_stream(current)
                try:
                    with torch.cuda.stream(side):
                        for _ in range(self.warmup):
                            self.fn(static_x)
                finally:
                    current.wait_stream(side)
                with torch.cuda.graph(graph):
                    outputs = tuple(self.fn(static_x))
        finally:  # so that a call that captures draws what any other call draws
            torch.cuda.set_rng_state(rng_state, x.device)
        bound = [getattr(obj, name) for obj, name in self.attributes]
        return _Graph(graph, static_x, outputs, bound, stats)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: a CUDA tensor (its shape picks the graph) -> copies of ``fn(x)``'s tensors."""
        if not x.is_cuda:
            raise ValueError(f"a CUDA graph replays on a CUDA device; the input is on {x.device}")
        key = tuple(x.shape)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x)
        captured = self.graphs[key]
        for norm, (mean, std) in zip(self.normalizers, captured.stats, strict=True):
            fresh_mean, fresh_std = norm.stats(torch.float32)
            mean.copy_(fresh_mean)
            std.copy_(fresh_std)
        captured.static_x.copy_(x)
        captured.graph.replay()
        for (obj, name), value in zip(self.attributes, captured.bound, strict=True):
            setattr(obj, name, value)
        return tuple(t.clone() for t in captured.outputs)


@dataclass
class _Graph:
    """One captured shape: the graph, its input and output tensors, what ``attributes`` were
    bound to after the capture, and the normalizers' private (mean, std) it reads."""

    graph: torch.cuda.CUDAGraph
    static_x: torch.Tensor
    outputs: tuple[torch.Tensor, ...]
    bound: list[object]
    stats: list[tuple[torch.Tensor, torch.Tensor]]
