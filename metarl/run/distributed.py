"""torch.distributed data parallelism over the task batch (launch with torchrun), for every task family.

Every rank draws the same batch of B tasks and keeps its share (metarl.core.source); what the outer step
computes from its tasks -- meta-gradients, losses, TRPO's Hessian-vector products, line-search checks --
is a mean over them, so `Reducer` turns it into the mean over all B tasks with one all_reduce: each rank
contributes share * its mean. Every rank then takes the same step and the meta-parameters stay identical.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

# collectives of small host values go through a tensor on this device (nccl needs CUDA tensors)
_device = torch.device("cpu")


def rank_and_world(device: torch.device) -> tuple[int, int]:
    """(rank, world size); initialises the default process group when launched by torchrun (gloo for CPU
    tensors, nccl for CUDA ones)."""
    global _device
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    _device = device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


class Reducer:
    """reduce(*tensors) -> the same tensors, each the share-weighted sum over ranks (one all_reduce)."""

    def __init__(self, share: float, world: int):
        self.share, self.world = share, world

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        if self.world <= 1:
            return list(tensors)
        flat = torch.cat([t.detach().reshape(-1).to(tensors[0].dtype) for t in tensors]) * self.share
        dist.all_reduce(flat)
        out, offset = [], 0
        for t in tensors:
            out.append(flat[offset : offset + t.numel()].view_as(t).to(t.dtype))
            offset += t.numel()
        return out


def total(x: float, world: int) -> float:
    """The sum of x over ranks."""
    if world <= 1:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=_device)
    dist.all_reduce(t)
    return float(t)


def any_rank(flag: bool, world: int) -> bool:
    """True on every rank when it is True on any (e.g. a time limit reached): ranks stop together."""
    if world <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t > 0)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def shutdown(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()
