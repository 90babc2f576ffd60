"""How the tasks of a batch are computed: one executor, chosen when a learner is built (train.task_batching).

    vmap     every task in one torch.func.vmap call (per-task weights become batched matmuls, grouped convs)
    loop     one task at a time with plain autograd; each task's graph is freed after its backward
    threads  the loop on a pool of Python threads, one task per core side by side (each op on one thread:
             small convolutions split poorly over cores)
    chunks   vmap over groups of chunk_size tasks (the memory of one group)
    recompute (loop, threads): each inner step's and outer loss's activations are dropped after the forward
             and recomputed in the backward, so second-order memory stops growing with the inner steps

All modes give the same numbers (tests/test_batching.py); sums over tasks are taken in task order.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.func import vmap
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from metarl.core.params import MetaParams, detach, take

MODES = ("vmap", "loop", "threads", "chunks")

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


@contextmanager
def task_threads():
    """A pool of torch.get_num_threads() Python threads, with torch's intra-op parallelism set to one thread
    while it is used (restored after): whole tasks side by side use the cores better than one task's small ops
    split over them (bench_meta_gradient.py --case omniglot). Yields None where there is one thread."""
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


def map_tasks(fn: Callable[[int], Any], n: int) -> list:
    """[fn(0), ..., fn(n - 1)] on the task threads (in this thread's grad mode) or in a loop, in task order."""
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


os.register_at_fork(after_in_child=_pools.clear)  # threads do not survive fork


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


def _num_tasks(tree) -> int:
    return tree_flatten(tree)[0][0].shape[0]


@dataclass(frozen=True)
class TaskExecutor:
    mode: str = "vmap"
    chunk_size: int = 8
    recompute: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"train.task_batching must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.recompute and self.mode not in ("loop", "threads"):
            raise ValueError(f"train.recompute_inner_steps needs train.task_batching loop or threads, got {self.mode}")

    @property
    def one_task_at_a_time(self) -> bool:
        """Whether each task runs on its own (loop, threads): what plain, unbatched ops suit."""
        return self.mode in ("loop", "threads")

    def each(self, fn: Callable[[int], Any], n: int) -> list:
        """[fn(0), ..., fn(n - 1)]: on the task threads in threads mode, else in a loop."""
        return map_tasks(fn, n) if self.mode == "threads" else [fn(i) for i in range(n)]

    def map(self, fn, *args):
        """fn applied to each task's slice of args (every tensor with a leading task dim), outputs stacked
        along a new leading dim."""
        if self.mode == "vmap":
            return vmap(fn)(*args)
        n = _num_tasks(args)
        if self.mode == "chunks":
            outs = [vmap(fn)(*take(args, slice(i, i + self.chunk_size))) for i in range(0, n, self.chunk_size)]
            return tree_map(lambda *xs: torch.cat(xs), *outs)
        outs = self.each(lambda i: fn(*take(args, i)), n)
        return tree_map(lambda *xs: torch.stack(xs), *outs)

    def checkpointed(self, fn):
        """fn, or fn with its activations recomputed in the backward (recompute mode, a graph being recorded)."""
        if self.recompute and torch.is_grad_enabled():
            return lambda *args: recomputed(fn, *args)
        return fn

    def gradient(self, task_loss, meta: MetaParams, support, query):
        """(d mean_i L_i / d meta, mean_i L_i, mean metrics) for task_loss(meta, support_i, query_i) ->
        (L_i, metrics_i) of ONE task. vmap: torch.func.grad of the vmapped mean; the other modes one task
        (loop, threads) or one vmapped chunk at a time with plain autograd, each group's graph freed after its
        backward, so memory is that of one group per thread."""
        if self.mode == "vmap":
            def mean_loss(m):
                losses, metrics = vmap(lambda s, q: task_loss(m, s, q))(support, query)
                loss = losses.mean()
                return loss, (loss.detach(), {k: v.mean().detach() for k, v in metrics.items()})

            # detached: with meta tensors that require grad, the gradients would keep this graph alive
            grads, (loss, metrics) = torch.func.grad(mean_loss, has_aux=True)(detach(meta))
            return grads, loss, metrics
        leaves, spec = tree_flatten(tree_map(lambda t: t.detach().requires_grad_(), meta))
        m = tree_unflatten(leaves, spec)
        n = _num_tasks(support)
        size = self.chunk_size if self.mode == "chunks" else 1

        def group(lo: int):
            if size == 1:
                loss, metrics = task_loss(m, take(support, lo), take(query, lo))
            else:
                part = slice(lo, lo + size)
                losses, metrics = vmap(lambda s, q: task_loss(m, s, q))(take(support, part), take(query, part))
                loss, metrics = losses.sum(), {k: v.sum() for k, v in metrics.items()}
            grads = torch.autograd.grad(loss / n, leaves, allow_unused=True)
            return grads, loss.detach() / n, {k: v.detach() / n for k, v in metrics.items()}

        starts = range(0, n, size)
        parts = self.each(lambda i: group(starts[i]), len(starts))
        grads = [torch.zeros_like(t) for t in leaves]
        total, sums = 0.0, {}
        for part_grads, loss, metrics in parts:  # in task order: the same sums however the threads ran
            for g, d in zip(grads, part_grads):
                if d is not None:
                    g += d
            total = total + loss
            sums = {k: sums.get(k, 0.0) + v for k, v in metrics.items()}
        return tree_unflatten(grads, spec), total, sums

    def mean_over_tasks(self, one, meta: MetaParams, support, query):
        """(grads, loss, metrics) averaged over the tasks, for a learner whose update is computed per task by
        one(meta, support_i, query_i) -> ({group: {name: tensor}}, loss, {metric: tensor}) (one task at a
        time, on the task threads in threads mode)."""
        n = _num_tasks(support)
        parts = self.each(lambda i: one(detach(meta), take(support, i), take(query, i)), n)  # detached: own leaves
        grads = {g: {k: torch.stack([p[0][g][k] for p in parts]).mean(0) for k in grp}
                 for g, grp in parts[0][0].items()}
        loss = torch.stack([p[1] for p in parts]).mean()
        metrics = {name: torch.stack([p[2][name] for p in parts]).mean() for name in parts[0][2]}
        return grads, loss, metrics
