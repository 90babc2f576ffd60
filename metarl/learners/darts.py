"""Differentiable architecture search (DARTS) on the bilevel core: the network's weights w are the inner
variable, its architecture weights alpha (metarl.darts) the meta-parameters.

For one batch (support: training examples, query: validation examples), xi = learner.inner_lr:

    w direction      grad_w L_train(w, alpha)                          (the weights train on training data)
    alpha, second    d/d alpha L_val(w - xi grad_w L_train(w, alpha), alpha)   (through the lookahead step)
    alpha, first     grad_alpha L_val(w, alpha)                        (learner.first_order)

The outer step moves both along these directions. After the search the cell is discretised
(metarl.darts.derive_genotype) and retrained from scratch (metarl.trainer.run: learner.retrain_iterations).
"""
from __future__ import annotations

from typing import Any

import torch

from metarl.learners.base import Learner, mean_over_tasks, sgd_step
from metarl.params import MetaParams, Params

ARCH = "alphas"


class ArchitectureSearch(Learner):
    needs_query = True

    def __init__(self, objective, init_params: Params, inner_lr: float = 0.01, first_order: bool = False):
        if ARCH not in init_params:
            raise ValueError("architecture search needs a searchable network (model.arch cells without a genotype)")
        if not inner_lr > 0:
            raise ValueError(f"inner_lr must be positive, got {inner_lr}")
        self.objective, self.inner_lr, self.first_order = objective, float(inner_lr), bool(first_order)
        self.inner_steps, self.step_loss_weights = 1, (1.0,)
        self._init = {k: v.detach().clone() for k, v in init_params.items()}

    def init_meta_params(self) -> MetaParams:
        return {"theta": {k: v.clone() for k, v in self._init.items() if k != ARCH},
                "arch": {ARCH: self._init[ARCH].clone()}}

    def start(self, meta: MetaParams) -> Params:
        return {**meta["theta"], **meta["arch"]}

    def step(self, meta: MetaParams, params: Params, data: Any, s: int) -> Params:
        """A plain SGD step of the weights on the support loss (the architecture stays)."""
        return sgd_step(self.objective, params, data, self.inner_lr, fixed=(ARCH,))

    def meta_gradient(self, meta: MetaParams, support: Any, query: Any):
        return mean_over_tasks(self._one, meta, support, query, threads=self.batching == "threads")

    def _one(self, meta: MetaParams, train: Any, val: Any):
        w = {k: v.requires_grad_() for k, v in meta["theta"].items()}
        alpha = meta["arch"][ARCH].requires_grad_()
        names = list(w)
        with torch.enable_grad():
            train_loss = self.objective.inner_loss({**w, ARCH: alpha}, train)
            g_w = torch.autograd.grad(train_loss, [w[k] for k in names], create_graph=not self.first_order)
            if self.first_order:
                val_loss = self.objective.inner_loss({**w, ARCH: alpha}, val)
            else:
                ahead = {k: w[k] - self.inner_lr * d for k, d in zip(names, g_w)}
                val_loss = self.objective.inner_loss({**ahead, ARCH: alpha}, val)
            g_alpha = torch.autograd.grad(val_loss, alpha)[0]
        grads = {"theta": {k: d.detach() for k, d in zip(names, g_w)}, "arch": {ARCH: g_alpha}}
        return grads, train_loss.detach(), {"val_loss": val_loss.detach()}
