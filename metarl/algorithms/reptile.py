"""Reptile (Nichol et al. 2018): k steps of SGD on each task, then move theta towards the adapted weights.

    phi_i = SGD^k(theta, support_i)              (RL: step s on the episodes phi_{i,s} collected)
    theta <- theta + epsilon * (mean_i phi_i - theta)

With `inner_batches` m > 1 (supervised), step s of training takes the (s mod m)-th of m mini-batches of
consecutive examples of the support set, which the source shuffles: the paper trains 1-shot learners on a
10-shot support seen 10 examples per step (5-way: m = 5), so that the inner steps are not 5 passes over the
same 5 images. Evaluation adapts on the whole support as every learner does.

The update is returned as a "gradient" g = theta - mean_i phi_i, so any outer optimiser applies it; with
plain SGD at learning rate epsilon it is exactly the interpolation above (outer.optimizer sgd, outer.lr epsilon).
"""
from __future__ import annotations

from typing import Any

import torch

from metarl.algorithms.base import as_steps, at
from metarl.algorithms.maml import MAML
from metarl.algorithms.rules import Algorithm
from metarl.core.errors import ConfigError
from metarl.core.executor import TaskExecutor
from metarl.core.params import MetaParams, Metrics


class Reptile(MAML):
    needs_query = False

    def __init__(self, objective, init_params, inner_lr: float = 0.02, inner_steps: int = 5,
                 step_lr_scales: tuple[float, ...] = (), inner_batches: int = 1, executor: TaskExecutor | None = None):
        # No gradient flows through the inner loop, so it runs first order.
        super().__init__(objective, init_params, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True,
                         step_lr_scales=step_lr_scales, executor=executor)
        self.inner_batches = int(inner_batches)

    def minibatches(self, support: tuple) -> list[tuple]:
        """The support of each inner step: mini-batch s mod m of m equal runs of examples (dim 1, after tasks)."""
        m, n = self.inner_batches, support[0].shape[1]
        if n % m:
            raise ValueError(f"a support set of {n} examples does not split into {m} equal mini-batches")
        size = n // m
        return [tuple(t[:, (s % m) * size:(s % m + 1) * size] for t in support) for s in range(self.inner_steps)]

    def meta_gradient(self, meta: MetaParams, support: Any, query: Any) -> tuple[MetaParams, torch.Tensor, Metrics]:
        support = self.minibatches(as_steps(support)[0]) if self.inner_batches > 1 else as_steps(support)
        theta = meta["theta"]
        adapted = self.adapt_path(meta, support, self.inner_steps)[-1]
        grads = {k: theta[k].detach() - adapted[k].mean(dim=0) for k in theta}
        last = self.inner_steps - 1
        with torch.no_grad():  # a loss to report: the query loss of the adapted weights (RL: no query, the inner loss)
            if query:
                per_task = self.executor.map(self.objective.metrics, adapted, at(as_steps(query), last))
                loss = per_task.pop("loss")
            else:
                per_task, loss = {}, self.executor.map(self.objective.inner_loss, adapted, at(support, last))
        return {"theta": grads}, loss.mean(), {k: v.mean() for k, v in per_task.items()}



def check(cfg, family) -> None:
    L = cfg.learner
    if any(not x > 0 for x in L.step_lr_scales):
        raise ConfigError(f"learner.step_lr_scales must be positive, got {list(L.step_lr_scales)}")
    if L.inner_batches > 1 and family.is_rl:
        raise ConfigError("learner.inner_batches splits a supervised support set; RL steps collect their own episodes")
    if L.inner_batches > 1 and cfg.task.k_support % L.inner_batches:
        raise ConfigError(f"learner.inner_batches {L.inner_batches} must divide task.k_support {cfg.task.k_support} "
                          "(equal mini-batches)")


def build(cfg, objective, model, init, executor) -> Reptile:
    L = cfg.learner
    return Reptile(objective, init, inner_lr=L.inner_lr, inner_steps=L.inner_steps, step_lr_scales=L.step_lr_scales,
                   inner_batches=L.inner_batches, executor=executor)


SPEC = Algorithm(name="reptile", title="Reptile", build=build, check=check,
                 summary="Reptile: theta moves towards the adapted weights (Nichol et al. 2018)",
                 reads=tuple(f"learner.{k}" for k in ("inner_steps", "inner_lr", "step_lr_scales", "inner_batches",
                                                      "estimator")))
