"""Reptile (Nichol et al. 2018): k steps of SGD on each task, then move theta towards the adapted weights.

    phi_i = SGD^k(theta, support_i)              (RL: step s on the episodes phi_{i,s} collected)
    theta <- theta + epsilon * (mean_i phi_i - theta)

The update is returned as a "gradient" g = theta - mean_i phi_i, so any outer optimiser applies it; with
plain SGD at learning rate epsilon it is exactly the interpolation above.
"""
from __future__ import annotations

from typing import Any

import torch

from metarl.learners.base import as_steps, at
from metarl.learners.maml import MAML
from metarl.params import MetaParams, Metrics


class Reptile(MAML):
    needs_query = False

    def __init__(self, objective, init_params, inner_lr: float = 0.02, inner_steps: int = 5,
                 step_lr_scales: tuple[float, ...] = ()):
        # No gradient flows through the inner loop, so it runs first order.
        super().__init__(objective, init_params, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True,
                         step_lr_scales=step_lr_scales)

    def meta_gradient(self, meta: MetaParams, support: Any, query: Any) -> tuple[MetaParams, torch.Tensor, Metrics]:
        support = as_steps(support)
        theta = meta["theta"]
        adapted = self.adapt_path(meta, support, self.inner_steps)[-1]
        grads = {k: theta[k].detach() - adapted[k].mean(dim=0) for k in theta}
        last = self.inner_steps - 1
        with torch.no_grad():  # a loss to report: the query loss of the adapted weights (RL: no query, the inner loss)
            if query:
                per_task = self.over_tasks(self.objective.metrics, adapted, at(as_steps(query), last))
                loss = per_task.pop("loss")
            else:
                per_task, loss = {}, self.over_tasks(self.objective.inner_loss, adapted, at(support, last))
        return {"theta": grads}, loss.mean(), {k: v.mean() for k, v in per_task.items()}

