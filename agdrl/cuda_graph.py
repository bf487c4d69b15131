"""The guided chain captured in a CUDA graph and replayed.

At small batches a GPU spends a guided chain launching kernels rather than computing: about
1,400 launches per guided H = 50 trajectory of the fast preset, 26.6 ms on an H200 against
16 ms on a 2-core CPU (results/README.md, "On a GPU"). A CUDA graph records one call's
launches once and replays them all with one. What that asks of the chain, and how agdrl's
chain meets it:

- no host-device synchronization inside: the guidance hooks keep their diagnostics as
  tensors and put off their finite checks while capturing (:func:`capturing`);
- fixed addresses: the input is copied into a static tensor; the optimizers and the EMA
  update parameters in place; the normalizers write refreshed statistics into their cached
  tensors (:meth:`agdrl.normalization.RunningNormalizer.stats`, called before every replay);
- random draws from the device's default generator: a graph replays its draws with fresh
  numbers only from that generator, and a draw from one of the trainer's CPU generators
  would be a host-to-device copy, which a graph cannot hold.

Python values the chain reads are frozen at capture: the sampler's grid and constants, the
guidance scale, policy guidance's relaxation (so PolyGRAD's 'pull' mode, whose step δ adapts
between calls, is not captured: :class:`agdrl.config.ImaginationConfig`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

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

    modules: whose :class:`RunningNormalizer` statistics ``fn`` reads (refreshed before every
    replay). attributes: ``(object, name)`` pairs that ``fn`` rebinds to tensors of the chain
    (a hook's noise or diagnostics); after a replay they are bound again to the tensors of the
    replayed graph, which the replay has just rewritten, so that reading them gives this
    call's values whichever graph ran last. warmup: eager calls on a side stream before the
    capture (lazy initializations such as cuBLAS workspaces must not happen inside it).

    Each call returns fresh copies of the graph's outputs: the next replay overwrites them.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Sequence[torch.Tensor]],
                 modules: Iterable[nn.Module],
                 attributes: Iterable[tuple[object, str]] = (), warmup: int = 2):
        self.fn, self.warmup = fn, warmup
        self.normalizers = [m for module in modules for m in module.modules()
                            if isinstance(m, RunningNormalizer)]
        self.attributes = list(attributes)
        self.graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor,
                                                 tuple[torch.Tensor, ...], list[object]]] = {}

    def _refresh(self) -> None:
        for norm in self.normalizers:
            norm.stats(torch.float32)

    def _capture(self, x: torch.Tensor) -> None:
        # the warm-up draws are given back: a call that captures draws what any other does
        rng_state = torch.cuda.get_rng_state(x.device)
        static_x = x.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(static_x)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = tuple(self.fn(static_x))
        torch.cuda.set_rng_state(rng_state, x.device)
        bound = [getattr(obj, name) for obj, name in self.attributes]
        self.graphs[tuple(x.shape)] = (graph, static_x, outputs, bound)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: a CUDA tensor (its shape picks the graph) -> copies of ``fn(x)``'s tensors."""
        if not x.is_cuda:
            raise ValueError(f"a CUDA graph replays on a CUDA device; the input is on {x.device}")
        self._refresh()
        if tuple(x.shape) not in self.graphs:
            self._capture(x)
        graph, static_x, outputs, bound = self.graphs[tuple(x.shape)]
        static_x.copy_(x)
        graph.replay()
        for (obj, name), value in zip(self.attributes, bound, strict=True):
            setattr(obj, name, value)
        return tuple(t.clone() for t in outputs)
