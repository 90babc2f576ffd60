"""Where a learner's data comes from: one interface over supervised sets (H = 1) and rollouts (H > 1).

    source.train_batch(iteration, learner, meta) -> (Batch of this process's tasks, metrics)
    source.evaluate(learner, meta, tasks, steps, generator) -> (per step 0..steps: per-task metrics, plot trace)

Every training batch is a function of (seed, iteration) alone: a resumed run sees the same tasks as an
uninterrupted one, and under torch.distributed every rank draws the same batch of B tasks and keeps its
share (`shard`), so W ranks see exactly the tasks one process would.

`SupervisedSource` draws support and query sets from the task distribution. Nothing is rolled out (the
action is the prediction, the loss is differentiable), so one support serves every inner step. The RL
counterpart is `metarl.rl.source.RolloutSource`.
"""
from __future__ import annotations

from typing import Any

import torch

from envs.base import TaskBatch
from envs.supervised import Episode, SupervisedTaskDistribution
from metarl.learners.base import Batch, Learner
from metarl.params import MetaParams, detach, take, to_device

# Supervised training sets are drawn for several iterations at once (one sampling call instead of S): at
# most this many tensor elements per block, at most _MAX_BLOCK iterations.
_BLOCK_ELEMENTS = 1 << 20
_MAX_BLOCK = 64


def derived_seed(seed: int, stream: int, index: int) -> int:
    return ((seed * 1_000_003 + stream) * 1_000_003 + index) % 2**63


class Source:
    """What every experience source shares: the task distribution, the batch size, this process's shard."""

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

    def train_generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(derived_seed(self.seed, 0, index))

    def mine(self, tree):
        lo, n = self.shard
        return take(tree, slice(lo, lo + n))


class SupervisedSource(Source):
    def __init__(self, distribution: SupervisedTaskDistribution, objective, meta_batch_size: int, seed: int,
                 device: torch.device, k_support: int, k_query: int, eval_k_support: int, eval_k_query: int,
                 rank: int = 0, world: int = 1, batch_norm: str | None = None, augment: bool = False):
        super().__init__(distribution, meta_batch_size, seed, device, rank, world)
        #: support sets carry augmentation noise u ~ U(-1, 1) per image, (x, y, u) (metarl.augment)
        self.augment = augment
        #: None: the model has no batch norm; "transductive" or "support": which statistics normalise a query
        self.batch_norm = batch_norm
        self.headline = "accuracy" if distribution.loss == "cross_entropy" else "loss"
        self.objective = objective
        self.k_support, self.k_query, self.eval_k_support, self.eval_k_query = k_support, k_query, eval_k_support, eval_k_query
        probe = distribution.sample_episode(1, k_support, k_query, torch.Generator().manual_seed(0), "train")
        elements = sum(x.numel() for x in (*probe.support, *probe.query)) * meta_batch_size
        self.block_iterations = max(1, min(_MAX_BLOCK, _BLOCK_ELEMENTS // max(1, elements)))
        self._block: tuple[int, list[Episode]] = (-1, [])

    def protocol(self) -> dict[str, Any]:
        batch_norm = {"batch_norm": self.batch_norm} if self.batch_norm else {}
        return {"k_support": self.eval_k_support, "k_query": self.eval_k_query, **batch_norm}

    def _query(self, support: tuple, query: tuple) -> tuple:
        """Query data as the objective takes it: with the support inputs when they set the normalisation."""
        return (*query, support[0]) if self.batch_norm == "support" else query

    def train_batch(self, iteration: int, learner: Learner, meta: MetaParams) -> tuple[Batch, dict[str, float]]:
        B, S = self.batch_size, self.block_iterations
        index, offset = divmod(iteration, S)
        if self._block[0] != index:
            ep = self.dist.sample_episode(S * B, self.k_support, self.k_query, self.train_generator(index), "train")
            ep, (lo, n) = ep.to(self.device), self.shard
            self._block = (index, [Episode(*take((ep.tasks, ep.support, ep.query), slice(i * B + lo, i * B + lo + n)))
                                   for i in range(S)])
        ep = self._block[1][offset]
        support = ep.support
        if self.augment:  # a stream of its own: the tasks and images are those of a run without augmentation
            gen = torch.Generator().manual_seed(derived_seed(self.seed, 1, iteration))
            support = (*support, self.mine(self._noise(B, support[0].shape[1], gen, support[0].dtype)))
        return Batch(ep.tasks, [support], [self._query(ep.support, ep.query)]), {}

    def _noise(self, tasks: int, images: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        from metarl.augment import NOISE_DIMS

        return (torch.rand(tasks, images, NOISE_DIMS, generator=generator, dtype=dtype) * 2 - 1).to(self.device)

    def evaluate(self, learner: Learner, meta: MetaParams, tasks: TaskBatch, steps: int, generator: torch.Generator,
                 plot_tasks: int = 0) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any]]:
        support, query = to_device(self.dist.sample_support_query(tasks, self.eval_k_support, self.eval_k_query,
                                                                  generator, "test"), self.device)
        adapt_on = (*support, self._noise(*support[1].shape[:2], generator, support[0].dtype)) if self.augment \
            else support
        path = learner.adapt_path(meta, adapt_on, steps)
        with torch.no_grad():
            per_step = [detach(learner.over_tasks(self.objective.metrics, p, self._query(support, query))) for p in path]
        n = min(plot_tasks, support[0].shape[0])

        def predict(step: int, x: torch.Tensor) -> torch.Tensor:
            """Predictions of the first x.shape[0] plotted tasks after `step` steps on inputs x (task dim first)."""
            m = x.shape[0]
            reference = (take(support[0], slice(m)),) if self.batch_norm == "support" else ()
            with torch.no_grad():
                return learner.over_tasks(self.objective.predict, take(path[step], slice(m)), x.to(self.device),
                                          *reference).cpu()

        trace = {"tasks": take(tasks, slice(n)), "support": take(support, slice(n)), "query": take(query, slice(n)),
                 "steps": sorted({0, min(1, steps), steps}), "predict": predict}
        return per_step, to_device(trace, "cpu")
