"""Distributed helpers that also work without a process group (world size 1).

The library never needs an ``Accelerator``: accelerate (and torchrun) initialise ``torch.distributed``, and these
helpers read it. Every function degrades to the single-process identity when no process group exists, so the same
loss and selection code runs in tests, notebooks and multi-GPU jobs (pattern of lightly's ``utils/dist.py``).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group is initialised and has more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank, 0 without a process group."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes, 1 without a process group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherLayer(torch.autograd.Function):
    """All-gather whose backward all-reduces the incoming gradients and returns this rank's slice.

    Every rank computes the loss on the full gathered batch, so the gradient of the *sum* of the per-rank losses
    w.r.t. this rank's input is the sum over ranks of the gradient slices; the all-reduce forms it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        all_grads = torch.stack(grads)
        dist.all_reduce(all_grads, op=dist.ReduceOp.SUM)
        return all_grads[dist.get_rank()]


def gather(x: torch.Tensor, differentiable: bool = True) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) along dim 0 across processes, in rank order.

    With ``differentiable=True`` gradients flow back to every rank's input (see ``_GatherLayer``). If rank r's loss
    is the mean over its own anchors scored against the gathered candidates, the mean of the per-rank losses is the
    full-batch loss, and DDP's gradient averaging then yields exactly the single-process full-batch gradient
    (each rank's input gradient is world_size times its slice of the full-batch gradient before that averaging).
    Without a process group returns ``x`` unchanged.
    """
    if not is_distributed():
        return x
    if differentiable and x.requires_grad:
        return torch.cat(_GatherLayer.apply(x), dim=0)
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.detach().contiguous())
    return torch.cat(out, dim=0)


def collective_device() -> torch.device:
    """Where this process's tensors for a collective live: its current CUDA device under NCCL, else the CPU (gloo)."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Return rank ``src``'s ``x`` on every rank (in place when distributed); identity without a process group."""
    if is_distributed():
        dist.broadcast(x, src=src)
    return x


class _AllReduceSumLayer(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the incoming gradients: every rank uses the same sum S, so the
    gradient of the sum of the per-rank losses w.r.t. this rank's summand is the sum over ranks of dL_r/dS (as in
    SyncBatchNorm)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.detach().clone().contiguous()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone().contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(x: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
    """Sum ``x`` over processes (out of place); identity without a process group. With ``differentiable=True``
    gradients flow back to every rank's ``x`` (see ``_AllReduceSumLayer``), with the same convention as ``gather``:
    DDP's gradient averaging then yields the gradient of the mean of the per-rank losses."""
    if not is_distributed():
        return x
    if differentiable and x.requires_grad:
        return _AllReduceSumLayer.apply(x)
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def gather_objects(obj: object) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` without a process group."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shut_down(release: Callable[[], None] | None = None) -> None:
    """Tear the process group down safely at the end of a run; nothing happens without one.

    Gloo's worker threads destroy finished work items, which needs the GIL; DDP's reducer and the group's destructors
    join those threads while holding it, so a DDP model released at interpreter exit can hang rank 0. The caller drops
    every reference to its DDP-wrapped modules before this call; ``release`` (run only when a group exists, e.g. an
    accelerator's ``free_memory``) frees what the launcher still holds. Then: collect, synchronise, let the workers
    finish outside the GIL, destroy the group.
    """
    if not dist.is_initialized():
        return
    if release is not None:
        release()
    gc.collect()
    dist.barrier()
    time.sleep(0.2)  # releases the GIL: workers finish destroying the barrier's work items
    dist.destroy_process_group()
