"""torch.distributed data parallelism over the task batch (launch with torchrun).

Each rank samples its own tasks and computes the meta-gradient of its share; gradients are averaged with
all_reduce, so every rank applies the same update and the meta-parameters stay identical. The outer step
is a function of (meta-parameters, task batch), which is what makes this a few lines.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); initialises the default process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if world > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_(tensors: list[torch.Tensor]) -> None:
    """In-place mean over ranks of each tensor (one flattened all_reduce)."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def average_scalar(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().reshape(1)
    average_([x])
    return x[0]
