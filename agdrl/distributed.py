"""Data-parallel training under ``torchrun`` (NCCL on GPUs, gloo on CPU).

Layout: every rank runs an identical copy of the environment (same seed, same acting noise),
so all ranks hold the same replay buffer and normalizer statistics; each rank draws its own
minibatches and imagination noise, and gradients are averaged across ranks before every
optimizer step. The models therefore stay identical on every rank while each step sees
``world_size`` times the data. The diffusion denoiser, the largest network, trains through
:class:`~torch.nn.parallel.DistributedDataParallel` (bucketed all-reduce overlapped with the
backward pass); the small actor, critic, ensemble and reward networks are averaged with one
coalesced all-reduce after their backward pass (their losses call the networks through helper
methods such as ``log_prob``, which DDP's forward hooks would not see). Only rank 0 evaluates,
logs and writes checkpoints.

    torchrun --nproc-per-node 2 -m agdrl train fast --env Hopper-v5

Without torchrun (no ``WORLD_SIZE`` in the environment) every function here is a no-op and
training is exactly the single-process code path.
"""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

_WRAPPERS: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def init_from_env() -> None:
    """Join the process group that torchrun describes in the environment (a no-op without
    torchrun, or when already joined). GPUs: NCCL, one device per local rank; else gloo."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def finish() -> None:
    """Wait for every rank, then leave the process group (a no-op without torchrun). A rank
    that exits while others still talk to it aborts them. The DDP wrappers go first: one that
    outlives its process group can abort the process at exit."""
    if dist.is_initialized():
        _WRAPPERS.clear()
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def data_parallel(module: nn.Module) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when running distributed (one wrapper per
    module, made on first use, which also broadcasts rank 0's parameters), else ``module``.
    Call the wrapper for the forward pass of the loss; keep using ``module`` everywhere else
    (saving, EMA, sampling)."""
    if not dist.is_initialized():
        return module
    wrapper = _WRAPPERS.get(module)
    if wrapper is None:
        device = next(module.parameters()).device
        wrapper = DistributedDataParallel(module, device_ids=[device] if device.type == "cuda"
                                          else None)
        _WRAPPERS[module] = wrapper
    return wrapper


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace every gradient by its mean over ranks (one all-reduce of the flattened
    gradients). Parameters without a gradient are left alone: every rank runs the same code,
    so they have none on any rank, and the optimizer skips them as in a single process."""
    if not dist.is_initialized():
        return
    params = [p for p in params if p.grad is not None]
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of a tensor over ranks (the tensor itself when not distributed)."""
    if not dist.is_initialized():
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def mean_std_over_ranks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) standard deviation of the entries of ``x`` pooled over all ranks;
    ``x.mean(), x.std()`` when not distributed."""
    if not dist.is_initialized():
        return x.mean(), x.std()
    moments = torch.stack([x.sum(), (x * x).sum(), x.new_tensor(float(x.numel()))]).double()
    dist.all_reduce(moments)
    total, squares, n = moments
    mean = total / n
    var = (squares - n * mean**2) / (n - 1)
    return mean.to(x.dtype), var.clamp(min=0).sqrt().to(x.dtype)


def check_in_sync(module: nn.Module, what: str) -> None:
    """Raise if ``module``'s parameters differ between ranks (a sum of all parameters
    compared by min and max over ranks: cheap enough for every checkpoint)."""
    if not dist.is_initialized():
        return
    with torch.no_grad():
        total = torch.stack([p.double().sum() for p in module.parameters()]).sum()
    low, high = total.clone().reshape(1), total.clone().reshape(1)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError(f"{what} diverged across ranks (parameter sums {low.item()!r} to "
                           f"{high.item()!r})")
