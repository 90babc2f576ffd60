"""The learner protocol: what the trainer, the outer steps and the experience sources see of an algorithm.

    Learner              init_meta_params(); meta_loss / meta_gradient(meta, support, query) (means over tasks)
    InnerLoopLearner     adapts ONE task by inner steps (vmapped over the task batch by its executor):
        state_0 = start(meta)                                        the initialisation (+ any optimiser state)
        state_s = step(meta, state_{s-1}, support[s-1], s-1)         one inner step, the learner's own rule
        phi_s   = params(meta, state_s)
        L       = sum_s w_s outer_loss(phi_s, query[s-1])             s = 1..k, w = step_loss_weights (sum 1)
    InContextLearner     adapts in the policy's memory, with no inner step (the source collects trials)

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

from envs.base import TaskBatch
from metarl.core.executor import TaskExecutor
from metarl.core.params import MetaParams, Metrics, Params, detach, take


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
    #: where these tasks sit in the whole batch that torch.distributed ranks split: its first task's index and
    #: the whole batch's size (None: these tasks are the whole batch)
    first: int = 0
    total: int | None = None

    @property
    def num_tasks(self) -> int:
        return next(iter(self.tasks.values())).shape[0]

    @property
    def total_tasks(self) -> int:
        return self.num_tasks if self.total is None else self.total

    def take(self, index) -> "Batch":
        """A subset of the tasks (a batch of its own: no place in a larger one)."""
        return Batch(take(self.tasks, index), take(self.support, index), take(self.query, index))


def as_steps(data: Any) -> list:
    """Per-step data as a list: a list stays, anything else is the data of every step."""
    return data if isinstance(data, list) else [data]


def at(steps: list, s: int):
    """Element s of a per-step list; a shorter list repeats its last element."""
    return steps[min(s, len(steps) - 1)]


def normalised_weights(weights: tuple[float, ...], steps: int) -> tuple[float, ...]:
    """Step-loss weights summing to 1 (rules checked with the config); empty = the last step only."""
    if not weights:
        return (0.0,) * (steps - 1) + (1.0,)
    return tuple(float(x) / sum(weights) for x in weights)


class Learner(ABC):
    """A meta-learner: pure functions of the meta-parameters `meta` (a dict of parameter groups), computed over
    the tasks of a batch by its executor (chosen when it is built)."""

    def __init__(self, objective, init_params: Params, executor: TaskExecutor | None = None):
        self.objective = objective
        self.executor = executor or TaskExecutor()
        self._init = {k: v.detach().clone() for k, v in init_params.items()}

    def init_meta_params(self) -> MetaParams:
        """Initial meta-parameters (fresh tensors): the initialisation "theta", and any group of the learner's own."""
        return {"theta": {k: v.clone() for k, v in self._init.items()}}

    @abstractmethod
    def meta_loss(self, meta: MetaParams, support: Any, query: Any) -> tuple[torch.Tensor, Metrics]:
        """The outer loss averaged over the tasks (differentiable in meta), and averaged metrics."""

    def meta_gradient(self, meta: MetaParams, support: Any, query: Any) -> tuple[MetaParams, torch.Tensor, Metrics]:
        """The update direction of every meta-parameter (the gradient of meta_loss unless the learner says
        otherwise: Reptile, example reweighting, DARTS), the loss and metrics; nothing attached to a graph."""
        leaves = {g: {k: v.detach().requires_grad_() for k, v in d.items()} for g, d in meta.items()}
        with torch.enable_grad():
            loss, metrics = self.meta_loss(leaves, support, query)
            names = [(g, k) for g, d in leaves.items() for k in d]
            grads = torch.autograd.grad(loss, [leaves[g][k] for g, k in names], allow_unused=True)
        out: MetaParams = {}
        for (g, k), d in zip(names, grads):
            out.setdefault(g, {})[k] = torch.zeros_like(leaves[g][k]) if d is None else d
        return out, loss.detach(), detach(metrics)

    def kl_curvature(self, meta: MetaParams, batch: Batch):
        """A function v -> (Hessian of the batch's mean KL at meta) v, for TRPO's conjugate gradient, where the
        learner offers a cheaper one than double backward through its adaptation; None otherwise."""
        return None


class InContextLearner(Learner):
    """Adapts in context: a recurrent policy reads the trial so far; there is no inner step."""

    #: episodes per trial in training
    trial_episodes: int

    def policy_params(self, meta: MetaParams) -> Params:
        """The parameters every task's policy acts with (shared: adaptation lives in the policy's memory)."""
        return meta["theta"]


class InnerLoopLearner(Learner):
    """Adapts each task by inner steps; the trainer, evaluator and rollouts all take the same `path`."""

    #: adaptation steps in training (evaluation may take more)
    inner_steps: int = 1
    #: weights of the outer losses after steps 1..inner_steps
    step_loss_weights: tuple[float, ...] = (1.0,)
    #: False for learners whose outer update needs no query data (Reptile): RL skips that collection
    needs_query: bool = True

    def start(self, meta: MetaParams) -> Any:
        """The adaptation state of one task before any step (shared by all tasks)."""
        return meta["theta"]

    @abstractmethod
    def step(self, meta: MetaParams, state: Any, data: Any, s: int) -> Any:
        """Inner step s (0-based) of ONE task on `data`, differentiable in meta."""

    def params(self, meta: MetaParams, state: Any) -> Params:
        """The task parameters of an adaptation state."""
        return state

    def batch_params(self, meta: MetaParams, states: Any) -> Params:
        """params() of a batch of adaptation states (leading task dim): what a batch of adapted tasks acts with."""
        return vmap(lambda st: self.params(meta, st))(states)

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
            return detach(self.executor.map(lambda st, d: self.step(meta, st, d, s), states, data))

    def adapt_path(self, meta: MetaParams, support: Any, steps: int) -> list[Params]:
        """Batched parameters after 0..steps steps (no graph): for evaluation, plots and tests."""
        with torch.no_grad():
            return detach(self.executor.map(lambda s: self.path(meta, s, steps), as_steps(support)))

    def task_loss(self, meta: MetaParams, support: list, query: list) -> tuple[torch.Tensor, Metrics]:
        """ONE task's weighted outer loss over the inner steps, and its weighted metrics."""
        state, loss, metrics = self.start(meta), 0.0, {}
        step, outer_loss = self.executor.checkpointed(self.step), self.executor.checkpointed(self.objective.outer_loss)
        for s, w in enumerate(self.step_loss_weights):
            state = step(meta, state, at(support, s), s)
            if w > 0:
                step_loss, m = outer_loss(self.params(meta, state), at(query, s))
                loss = loss + w * step_loss
                metrics = {k: metrics.get(k, 0.0) + w * v for k, v in m.items()}
        return loss, metrics

    def meta_loss(self, meta: MetaParams, support: Any, query: Any) -> tuple[torch.Tensor, Metrics]:
        losses, metrics = self.executor.map(lambda s, q: self.task_loss(meta, s, q), as_steps(support),
                                            as_steps(query))
        return losses.mean(), {k: v.mean() for k, v in metrics.items()}

    def meta_gradient(self, meta: MetaParams, support: Any, query: Any) -> tuple[MetaParams, torch.Tensor, Metrics]:
        return self.executor.gradient(self.task_loss, meta, as_steps(support), as_steps(query))


def sgd_step(objective, params: Params, data: Any, lr: float, fixed: tuple[str, ...] = ()) -> Params:
    """params - lr * grad L_inner(params, data), without a graph; the entries named in `fixed` stay as they are
    (the plain step of learners whose inner variable is the network itself)."""
    with torch.enable_grad():
        live = {k: v.detach().requires_grad_() for k, v in params.items() if k not in fixed}
        g = torch.autograd.grad(objective.inner_loss({**params, **live}, data), list(live.values()))
    return {**params, **{k: params[k] - lr * d for k, d in zip(live, g)}}
