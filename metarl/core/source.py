"""What every experience source shares: the task distribution, the batch size, this process's shard of it.

    source.train_batch(iteration, learner, meta) -> (Batch of this process's tasks, metrics)
    source.evaluate(learner, meta, tasks, steps, generator) -> (per step 0..steps: per-task metrics, plot trace)

Every training batch is a function of (seed, iteration) alone: a resumed run sees the same tasks as an
uninterrupted one, and under torch.distributed every rank draws the same batch of B tasks and keeps its
share (`shard`), so W ranks see exactly the tasks one process would. Sources: metarl.supervised.source
(support and query sets, H = 1) and metarl.rl.source (rollouts of the adapting policy).
"""
from __future__ import annotations

import torch

from metarl.core.params import take


def derived_seed(seed: int, stream: int, index: int) -> int:
    return ((seed * 1_000_003 + stream) * 1_000_003 + index) % 2**63


class Source:
    headline = "loss"

    def __init__(self, distribution, meta_batch_size: int, seed: int, device: torch.device, rank: int = 0,
                 world: int = 1):
        if world > meta_batch_size:
            raise ValueError(f"train.meta_batch_size {meta_batch_size} is smaller than the {world} torch.distributed "
                             "ranks that share each batch")
        self.dist, self.batch_size, self.seed, self.device = distribution, meta_batch_size, seed, device
        lo, hi = rank * meta_batch_size // world, (rank + 1) * meta_batch_size // world
        #: (first task, number of tasks) of this process in every batch
        self.shard = (lo, hi - lo)
        #: the weight of this process's mean in the mean over all tasks
        self.share = (hi - lo) / meta_batch_size
        #: (first task, whole batch size): where this process's tasks sit in every batch (Batch.first, .total)
        self.place = (lo, meta_batch_size)

    def train_generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(derived_seed(self.seed, 0, index))

    def mine(self, tree):
        lo, n = self.shard
        return take(tree, slice(lo, lo + n))
