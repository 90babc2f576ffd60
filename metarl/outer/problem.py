"""What the outer steps see of a learner: its outer loss and meta-gradient as functions of ONE flat vector of
all meta-parameters, with the means over tasks taken over all torch.distributed ranks (each rank holds its share
of the task batch)."""
from __future__ import annotations

import math
from typing import Callable

import torch

from metarl.algorithms.base import Batch, Learner
from metarl.core.errors import NonFiniteLossError
from metarl.core.params import FlatLayout


class MetaProblem:
    """A learner's outer loss and meta-gradient as functions of the flat meta-parameter vector.

    `reduce(*tensors)` turns this rank's means into means over all tasks (identity in one process);
    `gradient` may be compiled (`compile_fn`)."""

    def __init__(self, learner: Learner, layout: FlatLayout, reduce: Callable[..., list[torch.Tensor]] | None = None,
                 compile_fn: Callable[[Callable], Callable] | None = None):
        self.learner, self.layout = learner, layout
        self.reduce = reduce or (lambda *t, share=None: list(t))
        self._gradient = compile_fn(self._flat_gradient) if compile_fn else self._flat_gradient

    def _flat_gradient(self, flat: torch.Tensor, support, query):
        grads, loss, metrics = self.learner.meta_gradient(self.layout.unflatten(flat), support, query)
        return self.layout.flatten(grads), loss, metrics

    def gradient(self, flat: torch.Tensor, batch: Batch, share: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The meta-gradient, loss and metrics, means over all ranks' tasks (`share`: this rank's weight in
        them, when it is not its share of the whole batch)."""
        grad_, loss, metrics = self._gradient(flat, batch.support, batch.query)
        names = list(metrics)
        grad_, loss, *values = self.reduce(grad_, loss, *metrics.values(), share=share)
        return grad_, loss, dict(zip(names, values))

    def loss(self, flat: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """This rank's loss and metrics (with the graph; not reduced)."""
        return self.learner.meta_loss(self.layout.unflatten(flat), batch.support, batch.query)


def check_finite(loss: float, grad_norm: float) -> None:
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise NonFiniteLossError(-1, loss if not math.isfinite(loss) else grad_norm, None)
