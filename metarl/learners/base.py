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

import os
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.func import vmap
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from envs.base import TaskBatch
from metarl.params import MetaParams, Metrics, Params, detach, take

#: how a learner computes the tasks of a batch (train.task_batching)
BATCHING = ("vmap", "loop", "chunks", "threads")

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


@contextmanager
def task_threads():
    """A pool of torch.get_num_threads() Python threads, with torch's intra-op parallelism set to one thread
    while it is used (restored after): small convolutions parallelise poorly inside one op, so whole tasks
    side by side use the cores better (bench_meta_gradient.py --case omniglot). Yields None where there is
    one thread, or inside a task of an outer pool: the caller then loops."""
    workers = torch.get_num_threads()
    if workers <= 1:
        yield None
        return
    with _pools_lock:
        pool = _pools.get(workers) or _pools.setdefault(workers, ThreadPoolExecutor(workers, "metarl-task"))
    torch.set_num_threads(1)
    try:
        yield pool
    finally:
        torch.set_num_threads(workers)


def map_tasks(fn, n: int) -> list:
    """[fn(0), ..., fn(n - 1)], on the task threads (in this thread's grad mode) or in a loop; results in
    task order, so sums over them do not depend on scheduling."""
    with task_threads() as pool:
        if pool is None or n <= 1:
            return [fn(i) for i in range(n)]
        grad_mode = torch.is_grad_enabled()

        def run(i):
            with torch.set_grad_enabled(grad_mode):
                return fn(i)

        futures = [pool.submit(run, i) for i in range(n)]
        try:
            return [f.result() for f in futures]
        except BaseException:  # a task failed or Ctrl-C: the queued tasks are not run
            for f in futures:
                f.cancel()
            raise


class _Recompute(torch.autograd.Function):
    """call's outputs without its graph; the backward runs call again with a graph and differentiates it."""

    @staticmethod
    def forward(ctx, call, *flat):
        ctx.call = call
        ctx.save_for_backward(*flat)
        with torch.no_grad():
            return tuple(call(*flat))

    @staticmethod
    def backward(ctx, *grad_out):
        inputs = [t.detach().requires_grad_(t.requires_grad) for t in ctx.saved_tensors]
        with torch.enable_grad():
            out = ctx.call(*inputs)
        pairs = [(o, g) for o, g in zip(out, grad_out) if o.requires_grad and g is not None]
        wanted = [t for t in inputs if t.requires_grad]
        grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True)
                     if pairs and wanted else [None] * len(wanted))
        return (None, *[next(grads) if t.requires_grad else None for t in inputs])


def recomputed(fn, *args):
    """fn(*args) (tensors in nested dicts / lists / tuples, other leaves constants; tensor outputs), keeping
    none of its activations: the backward runs fn again with a graph. Gradient checkpointing of the
    reentrant kind: torch.utils.checkpoint's other kind still keeps the graph that an inner
    torch.autograd.grad(create_graph=True) builds. First derivatives only."""
    leaves, spec = tree_flatten(args)
    is_tensor = [isinstance(t, torch.Tensor) for t in leaves]
    tensors = [t for t, k in zip(leaves, is_tensor) if k]
    constants = [t for t, k in zip(leaves, is_tensor) if not k]
    out_spec = []

    def call(*flat):
        it_t, it_c = iter(flat), iter(constants)
        flat_out, structure = tree_flatten(fn(*tree_unflatten([next(it_t) if k else next(it_c) for k in is_tensor],
                                                               spec)))
        out_spec[:] = [structure]
        return flat_out

    return tree_unflatten(list(_Recompute.apply(call, *tensors)), out_spec[0])


def _forget_pools() -> None:
    _pools.clear()  # threads do not survive fork


os.register_at_fork(after_in_child=_forget_pools)


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
    #: of chunk_size tasks (bounded memory); "threads": the loop on a pool of threads, one core per task
    #: (task_threads). All give the same numbers (tests/test_batching.py).
    batching: str = "vmap"
    chunk_size: int = 8
    #: gradient checkpointing of the inner loop: the activations of each inner step and outer loss are dropped
    #: after the forward and recomputed in the backward, so the graph holds the steps' parameters only
    #: (plain autograd, one task at a time: batching loop or threads)
    recompute_steps: bool = False

    def over_tasks(self, fn, *args):
        """fn applied to each task's slice of args (every tensor with a leading task dim), outputs stacked
        along a new leading dim: torch.func.vmap, a loop, or a loop over vmapped chunks (self.batching)."""
        if self.batching == "vmap":
            return vmap(fn)(*args)
        n = tree_flatten(args)[0][0].shape[0]
        if self.batching in ("loop", "threads"):
            one = lambda i: fn(*take(args, i))  # noqa: E731
            outs = map_tasks(one, n) if self.batching == "threads" else [one(i) for i in range(n)]
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
            return detach(self.over_tasks(lambda st, d: self.step(meta, st, d, s), states, data))

    def adapt_path(self, meta: MetaParams, support: Any, steps: int) -> list[Params]:
        """Batched parameters after 0..steps steps (no graph): for evaluation, plots and tests."""
        with torch.no_grad():
            return detach(self.over_tasks(lambda s: self.path(meta, s, steps), as_steps(support)))

    def task_loss(self, meta: MetaParams, support: list, query: list) -> tuple[torch.Tensor, Metrics]:
        """ONE task's weighted outer loss over the inner steps, and its weighted metrics."""
        state, loss, metrics = self.start(meta), 0.0, {}
        recompute = self.recompute_steps and torch.is_grad_enabled()
        step = partial(recomputed, self.step) if recompute else self.step
        outer_loss = partial(recomputed, self.objective.outer_loss) if recompute else self.objective.outer_loss
        for s, w in enumerate(self.step_loss_weights):
            state = step(meta, state, at(support, s), s)
            if w > 0:
                step_loss, m = outer_loss(self.params(meta, state), at(query, s))
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
        """meta_gradient one task (loop, threads) or one vmapped chunk (chunks) at a time, with plain autograd:
        each group's graph is freed after its backward, so memory is that of one group per thread."""
        leaves, spec = tree_flatten(tree_map(lambda t: t.detach().requires_grad_(), meta))
        m = tree_unflatten(leaves, spec)
        n = tree_flatten(support)[0][0].shape[0]
        size = self.chunk_size if self.batching == "chunks" else 1

        def group(lo: int):
            if size == 1:
                loss, metrics = self.task_loss(m, take(support, lo), take(query, lo))
            else:
                part = slice(lo, lo + size)
                losses, metrics = vmap(lambda s, q: self.task_loss(m, s, q))(take(support, part), take(query, part))
                loss, metrics = losses.sum(), {k: v.sum() for k, v in metrics.items()}
            grads = torch.autograd.grad(loss / n, leaves, allow_unused=True)
            return grads, loss.detach() / n, {k: v.detach() / n for k, v in metrics.items()}

        starts = range(0, n, size)
        if self.batching == "threads":
            parts = map_tasks(lambda i: group(starts[i]), len(starts))
        else:
            parts = [group(lo) for lo in starts]
        grads = [torch.zeros_like(t) for t in leaves]
        total, sums = 0.0, {}
        for part_grads, loss, metrics in parts:  # in task order: the same sums however the threads ran
            for g, d in zip(grads, part_grads):
                if d is not None:
                    g += d
            total = total + loss
            sums = {k: sums.get(k, 0.0) + v for k, v in metrics.items()}
        return tree_unflatten(grads, spec), total, sums


def sgd_step(objective, params: Params, data: Any, lr: float, fixed: tuple[str, ...] = ()) -> Params:
    """params - lr * grad L_inner(params, data), without a graph; the entries named in `fixed` stay as they are
    (the plain step of learners whose inner variable is the network itself)."""
    with torch.enable_grad():
        live = {k: v.detach().requires_grad_() for k, v in params.items() if k not in fixed}
        g = torch.autograd.grad(objective.inner_loss({**params, **live}, data), list(live.values()))
    return {**params, **{k: params[k] - lr * d for k, d in zip(live, g)}}


def mean_over_tasks(one, meta: MetaParams, support: Any, query: Any, threads: bool = False):
    """(grads, loss, metrics) of a learner whose update is computed per task by
    one(meta, support_i, query_i) -> ({group: {name: tensor}}, loss, {metric: tensor}) on step 0's data,
    averaged over the tasks (on the task threads when `threads`)."""
    support, query = as_steps(support), as_steps(query)
    n = at(support, 0)[1].shape[0]
    task = lambda i: one(detach(meta), at(take(support, i), 0), at(take(query, i), 0))  # noqa: E731  (own leaves)
    parts = map_tasks(task, n) if threads else [task(i) for i in range(n)]
    grads = {g: {k: torch.stack([p[0][g][k] for p in parts]).mean(0) for k in grp} for g, grp in parts[0][0].items()}
    loss = torch.stack([p[1] for p in parts]).mean()
    metrics = {m: torch.stack([p[2][m] for p in parts]).mean() for m in parts[0][2]}
    return grads, loss, metrics
