"""The learner protocol and the one adaptation primitive every learner, task family and phase goes through.

A learner is a set of pure functions of the meta-parameters `meta` (a dict of parameter groups). For ONE task
(vmapped over the task batch):

    state_0 = start(meta)                                        the initialisation (+ any optimiser state)
    state_s = step(meta, state_{s-1}, support[s-1], s-1)         one inner step, the learner's own rule
    phi_s   = params(meta, state_s)
    L       = sum_s w_s outer_loss(phi_s, query[s-1])             s = 1..k, w = step_loss_weights (sum 1)

`support` and `query` are per-step lists of data with a leading task dim; a list shorter than k reuses its
last element. A supervised batch has one of each (the same support at every step, H = 1); an RL batch has
fresh episodes per step, collected by the policy each step adapted (metarl.rl.source). Training
differentiates L (second order unless first_order); evaluation and collection take the same steps without a
graph (`adapt`). An `Objective` says what one task's losses are: learners never import a concrete task.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.func import vmap
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from envs.base import TaskBatch
from metarl.params import MetaParams, Metrics, Params, detach, take

#: how a learner computes the tasks of a batch (train.task_batching)
BATCHING = ("vmap", "loop", "chunks")


class Objective(Protocol):
    """Losses of ONE task (the learners vmap them over the task batch)."""

    def inner_loss(self, params: Params, data: Any) -> torch.Tensor:
        """The loss the inner loop differentiates."""

    def outer_loss(self, params: Params, data: Any) -> tuple[torch.Tensor, Metrics]:
        """The loss of adapted parameters on query data, and metrics (scalars) to report."""

    def metrics(self, params: Params, data: Any) -> Metrics:
        """What the evaluation reports for these parameters on this data (e.g. loss, accuracy, return)."""


@dataclass
class Batch:
    """A meta-batch: task parameters and per-step support and query data (leading dim = tasks)."""

    tasks: TaskBatch
    support: list[Any]
    query: list[Any]

    @property
    def num_tasks(self) -> int:
        return next(iter(self.tasks.values())).shape[0]

    def take(self, index) -> "Batch":
        return Batch(take(self.tasks, index), take(self.support, index), take(self.query, index))


def as_steps(data: Any) -> list:
    """Per-step data as a list: a list stays, anything else is the data of every step."""
    return data if isinstance(data, list) else [data]


def at(steps: list, s: int):
    """Element s of a per-step list; a shorter list repeats its last element."""
    return steps[min(s, len(steps) - 1)]


def normalised_weights(weights: tuple[float, ...], steps: int) -> tuple[float, ...]:
    """Step-loss weights summing to 1; empty = the last step only."""
    if not weights:
        return (0.0,) * (steps - 1) + (1.0,)
    w = [float(x) for x in weights]
    if len(w) != steps or min(w) < 0 or sum(w) <= 0:
        raise ValueError(f"step_loss_weights needs {steps} non-negative weights (one per inner step) with a "
                         f"positive sum, got {list(weights)}")
    return tuple(x / sum(w) for x in w)


class Learner(ABC):
    objective: Objective
    #: adaptation steps in training (evaluation may take more)
    inner_steps: int
    #: weights of the outer losses after steps 1..inner_steps
    step_loss_weights: tuple[float, ...]
    #: False for learners whose outer update needs no query data (Reptile): RL skips that collection
    needs_query: bool = True
    #: "vmap": every task in one batched call (per-task weights become batched matmuls / grouped convolutions);
    #: "loop": one task at a time (plain convolutions: faster for conv nets on CPU); "chunks": vmap over groups
    #: of chunk_size tasks (bounded memory). All give the same numbers (tests/test_batching.py).
    batching: str = "vmap"
    chunk_size: int = 8

    def over_tasks(self, fn, *args):
        """fn applied to each task's slice of args (every tensor with a leading task dim), outputs stacked
        along a new leading dim: torch.func.vmap, a loop, or a loop over vmapped chunks (self.batching)."""
        if self.batching == "vmap":
            return vmap(fn)(*args)
        n = tree_flatten(args)[0][0].shape[0]
        if self.batching == "loop":
            outs = [fn(*take(args, i)) for i in range(n)]
            return tree_map(lambda *xs: torch.stack(xs), *outs)
        outs = [vmap(fn)(*take(args, slice(i, i + self.chunk_size))) for i in range(0, n, self.chunk_size)]
        return tree_map(lambda *xs: torch.cat(xs), *outs)

    @abstractmethod
    def init_meta_params(self) -> MetaParams:
        """Initial meta-parameters (fresh tensors)."""

    @abstractmethod
    def start(self, meta: MetaParams) -> Any:
        """The adaptation state of one task before any step (shared by all tasks)."""

    @abstractmethod
    def step(self, meta: MetaParams, state: Any, data: Any, s: int) -> Any:
        """Inner step s (0-based) of ONE task on `data`, differentiable in meta."""

    def params(self, meta: MetaParams, state: Any) -> Params:
        """The task parameters of an adaptation state."""
        return state

    # ------------------------------------------------------------------ derived: one path for every phase

    def path(self, meta: MetaParams, support: list, steps: int) -> list[Params]:
        """ONE task's parameters after 0..steps inner steps, step s on support[s]."""
        state = self.start(meta)
        out = [self.params(meta, state)]
        for s in range(steps):
            state = self.step(meta, state, at(support, s), s)
            out.append(self.params(meta, state))
        return out

    def adapt(self, meta: MetaParams, states: Any, data: Any, s: int) -> Any:
        """Inner step s for a batch of tasks (states and data with a leading task dim), without a graph."""
        with torch.no_grad():
            return detach(self.over_tasks(lambda st, d: self.step(meta, st, d, s), states, data))

    def adapt_path(self, meta: MetaParams, support: Any, steps: int) -> list[Params]:
        """Batched parameters after 0..steps steps (no graph): for evaluation, plots and tests."""
        with torch.no_grad():
            return detach(self.over_tasks(lambda s: self.path(meta, s, steps), as_steps(support)))

    def task_loss(self, meta: MetaParams, support: list, query: list) -> tuple[torch.Tensor, Metrics]:
        """ONE task's weighted outer loss over the inner steps, and its weighted metrics."""
        state, loss, metrics = self.start(meta), 0.0, {}
        for s, w in enumerate(self.step_loss_weights):
            state = self.step(meta, state, at(support, s), s)
            if w > 0:
                step_loss, m = self.objective.outer_loss(self.params(meta, state), at(query, s))
                loss = loss + w * step_loss
                metrics = {k: metrics.get(k, 0.0) + w * v for k, v in m.items()}
        return loss, metrics

    def meta_loss(self, meta: MetaParams, support: Any, query: Any) -> tuple[torch.Tensor, Metrics]:
        """The outer loss averaged over the tasks, and averaged metrics."""
        losses, metrics = self.over_tasks(lambda s, q: self.task_loss(meta, s, q), as_steps(support), as_steps(query))
        return losses.mean(), {k: v.mean() for k, v in metrics.items()}

    def meta_gradient(self, meta: MetaParams, support: Any, query: Any) -> tuple[MetaParams, torch.Tensor, Metrics]:
        """The gradient of meta_loss in every meta-parameter (Reptile overrides it with its update)."""
        if self.batching != "vmap":
            return self._grouped_meta_gradient(meta, as_steps(support), as_steps(query))

        def loss_fn(m):
            loss, metrics = self.meta_loss(m, support, query)
            return loss, (loss.detach(), detach(metrics))

        # detached: with meta tensors that require grad, the gradients would keep this graph alive
        grads, (loss, metrics) = torch.func.grad(loss_fn, has_aux=True)(detach(meta))
        return grads, loss, metrics

    def _grouped_meta_gradient(self, meta: MetaParams, support: list, query: list):
        """meta_gradient one task (loop) or one vmapped chunk (chunks) at a time, with plain autograd: each
        group's graph is freed after its backward, so memory is that of one group."""
        leaves, spec = tree_flatten(tree_map(lambda t: t.detach().requires_grad_(), meta))
        m = tree_unflatten(leaves, spec)
        n = tree_flatten(support)[0][0].shape[0]
        size = 1 if self.batching == "loop" else self.chunk_size
        grads = [torch.zeros_like(t) for t in leaves]
        total, sums = 0.0, {}
        for lo in range(0, n, size):
            if size == 1:
                loss, metrics = self.task_loss(m, take(support, lo), take(query, lo))
            else:
                group = slice(lo, lo + size)
                losses, metrics = vmap(lambda s, q: self.task_loss(m, s, q))(take(support, group), take(query, group))
                loss, metrics = losses.sum(), {k: v.sum() for k, v in metrics.items()}
            for g, d in zip(grads, torch.autograd.grad(loss / n, leaves, allow_unused=True)):
                if d is not None:
                    g += d
            total = total + loss.detach() / n
            sums = {k: sums.get(k, 0.0) + v.detach() / n for k, v in metrics.items()}
        return tree_unflatten(grads, spec), total, sums
