"""Reptile (Nichol et al. 2018): k steps of SGD on each task, then move theta towards the adapted weights.

    phi_i = SGD^k(theta, support_i)
    theta <- theta + epsilon * (mean_i phi_i - theta)

The update is returned as a "gradient" g = theta - mean_i phi_i, so any outer optimiser applies it; with
plain SGD at learning rate epsilon it is exactly the interpolation above.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.func import vmap

from metarl.learners.base import MetaParams, Metrics, Objective, Params
from metarl.learners.maml import MAML


class Reptile(MAML):
    def __init__(self, objective: Objective, init_params: Params, inner_lr: float = 0.02, inner_steps: int = 5):
        # No gradient flows through the inner loop, so it runs first order.
        super().__init__(objective, init_params, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True)

    def meta_gradient(self, meta: MetaParams, support: Any, query: Any) -> tuple[MetaParams, torch.Tensor, Metrics]:
        theta = meta["theta"]
        with torch.no_grad():
            adapted = self.adapt(meta, support)
            grads = {k: theta[k] - adapted[k].mean(dim=0) for k in theta}
            per_task = self.query_metrics(adapted, query)
        metrics = {k: v.mean() for k, v in per_task.items() if k != "loss"}
        return {"theta": grads}, per_task["loss"].mean(), metrics
