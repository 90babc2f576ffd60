"""The interface every meta-learner shares.

Meta-parameters are a nested dict of tensors, e.g. {"theta": {...}, "inner_lr": {...}}, owned by the trainer.
A learner is a set of pure functions of them:

    adapt_path(meta, support, steps) -> [params after 0, 1, ..., steps adaptation steps]  (batched over tasks)
    meta_loss(meta, support, query)  -> (loss, metrics)
    meta_gradient(meta, support, query) -> (grads with meta's structure, loss, metrics)

An `Objective` says what one task's loss is; learners never import a concrete task.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

import torch

Params = dict[str, torch.Tensor]
MetaParams = dict[str, Params]
Metrics = dict[str, torch.Tensor]


class Objective(Protocol):
    """Losses of ONE task (the learners vmap them over the task batch)."""

    def inner_loss(self, params: Params, data: Any) -> torch.Tensor:
        """The loss the inner loop differentiates."""

    def outer_loss(self, params: Params, data: Any) -> tuple[torch.Tensor, Metrics]:
        """The loss of the adapted parameters on query data, and metrics (scalars) to report."""


class MetaLearner(ABC):
    objective: Objective
    #: the number of adaptation steps used in training (evaluation may use more)
    inner_steps: int

    @abstractmethod
    def init_meta_params(self) -> MetaParams:
        """Initial meta-parameters (fresh tensors)."""

    @abstractmethod
    def adapt_path(self, meta: MetaParams, support: Any, steps: int) -> list[Params]:
        """Task-specific parameters after 0..steps adaptation steps; each dict batched over tasks (dim 0)."""

    def adapt(self, meta: MetaParams, support: Any, steps: int | None = None) -> Params:
        """adapt(params, support) -> adapted params, batched over tasks."""
        return self.adapt_path(meta, support, self.inner_steps if steps is None else steps)[-1]

    @abstractmethod
    def meta_loss(self, meta: MetaParams, support: Any, query: Any) -> tuple[torch.Tensor, Metrics]:
        """The outer loss averaged over tasks, and averaged metrics."""

    def meta_gradient(self, meta: MetaParams, support: Any, query: Any) -> tuple[MetaParams, torch.Tensor, Metrics]:
        """Gradient of meta_loss with respect to every meta-parameter (override for Reptile-style updates)."""

        def loss_fn(m):
            loss, metrics = self.meta_loss(m, support, query)
            return loss, (loss.detach(), {k: v.detach() for k, v in metrics.items()})

        grads, (loss, metrics) = torch.func.grad(loss_fn, has_aux=True)(meta)
        return grads, loss, metrics

    def query_metrics(self, params: Params, query: Any) -> Metrics:
        """Per-task outer loss and metrics of batched task parameters on query data: each (tasks,)."""

        def one(p, q):
            loss, metrics = self.objective.outer_loss(p, q)
            return {"loss": loss, **metrics}

        return torch.func.vmap(one)(params, query)


def flat_tensors(meta: MetaParams) -> list[torch.Tensor]:
    return [t for group in meta.values() for t in group.values()]


def detach_all(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}
