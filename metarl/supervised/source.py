"""Experience of supervised task families (H = 1): support and query sets drawn from the task distribution.

Nothing is rolled out (the action is the prediction, the loss is differentiable), so one support set serves
every inner step. Training sets are drawn for several iterations at once (one sampling call instead of S).
"""
from __future__ import annotations

from typing import Any

import torch

from envs.base import TaskBatch
from envs.supervised import Episode, SupervisedTaskDistribution
from metarl.algorithms.base import Batch, InnerLoopLearner
from metarl.core.params import MetaParams, detach, take, to_device
from metarl.core.source import Source, derived_seed

# at most this many tensor elements per block of training sets, at most _MAX_BLOCK iterations
_BLOCK_ELEMENTS = 1 << 20
_MAX_BLOCK = 64


def _split_rows(ep: Episode, S: int, B: int, lo: int, n: int) -> list[Episode]:
    """Iteration i's episode: rows i * B + lo .. + n of every tensor (views; one unbind per tensor, as
    slicing tree by tree per iteration costs a tenth of a small model's step)."""
    def rows(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return t.reshape(S, B, *t.shape[1:])[:, lo:lo + n].unbind(0)

    tasks = {k: rows(v) for k, v in ep.tasks.items()}
    support, query = [rows(t) for t in ep.support], [rows(t) for t in ep.query]
    return [Episode({k: v[i] for k, v in tasks.items()}, tuple(t[i] for t in support), tuple(t[i] for t in query))
            for i in range(S)]


class SupervisedSource(Source):
    def __init__(self, distribution: SupervisedTaskDistribution, objective, meta_batch_size: int, seed: int,
                 device: torch.device, k_support: int, k_query: int, eval_k_support: int, eval_k_query: int,
                 rank: int = 0, world: int = 1, batch_norm: str | None = None, augment: bool = False):
        super().__init__(distribution, meta_batch_size, seed, device, rank, world)
        #: support sets carry augmentation noise u ~ U(-1, 1) per image, (x, y, u) (metarl.nets.augment)
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

    def protocol(self, learner: InnerLoopLearner) -> dict[str, Any]:
        batch_norm = {"batch_norm": self.batch_norm} if self.batch_norm else {}
        return {"k_support": self.eval_k_support, "k_query": self.eval_k_query, **batch_norm}

    def _query(self, support: tuple, query: tuple) -> tuple:
        """Query data as the objective takes it: with the support inputs when they set the normalisation."""
        return (*query, support[0]) if self.batch_norm == "support" else query

    def train_batch(self, iteration: int, learner: InnerLoopLearner, meta: MetaParams) -> tuple[Batch, dict[str, float]]:
        B, S = self.batch_size, self.block_iterations
        index, offset = divmod(iteration, S)
        if self._block[0] != index:
            ep = self.dist.sample_episode(S * B, self.k_support, self.k_query, self.train_generator(index), "train")
            self._block = (index, _split_rows(ep.to(self.device), S, B, *self.shard))
        ep = self._block[1][offset]
        support = ep.support
        if self.augment:  # a stream of its own: the tasks and images are those of a run without augmentation
            gen = torch.Generator().manual_seed(derived_seed(self.seed, 1, iteration))
            support = (*support, self.mine(self._noise(B, support[0].shape[1], gen, support[0].dtype)))
        return Batch(ep.tasks, [support], [self._query(ep.support, ep.query)], *self.place), {}

    def _noise(self, tasks: int, images: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        from metarl.nets.augment import NOISE_DIMS

        return (torch.rand(tasks, images, NOISE_DIMS, generator=generator, dtype=dtype) * 2 - 1).to(self.device)

    def evaluate(self, learner: InnerLoopLearner, meta: MetaParams, tasks: TaskBatch, steps: int, generator: torch.Generator,
                 plot_tasks: int = 0) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any]]:
        support, query = to_device(self.dist.sample_support_query(tasks, self.eval_k_support, self.eval_k_query,
                                                                  generator, "test"), self.device)
        adapt_on = (*support, self._noise(*support[1].shape[:2], generator, support[0].dtype)) if self.augment \
            else support
        path = learner.adapt_path(meta, adapt_on, steps)
        with torch.no_grad():
            per_step = [detach(learner.executor.map(self.objective.metrics, p, self._query(support, query))) for p in path]
        n = min(plot_tasks, support[0].shape[0])

        def predict(step: int, x: torch.Tensor) -> torch.Tensor:
            """Predictions of the first x.shape[0] plotted tasks after `step` steps on inputs x (task dim first)."""
            m = x.shape[0]
            reference = (take(support[0], slice(m)),) if self.batch_norm == "support" else ()
            with torch.no_grad():
                return learner.executor.map(self.objective.predict, take(path[step], slice(m)), x.to(self.device),
                                          *reference).cpu()

        trace = {"tasks": take(tasks, slice(n)), "support": take(support, slice(n)), "query": take(query, slice(n)),
                 "steps": sorted({0, min(1, steps), steps}), "predict": predict}
        return per_step, to_device(trace, "cpu")
