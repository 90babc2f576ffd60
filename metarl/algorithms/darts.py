"""Differentiable architecture search (DARTS) on the bilevel core: the network's weights w are the inner
variable, its architecture weights alpha (metarl.nets.cells) the meta-parameters.

For one batch (support: training examples, query: validation examples), xi = learner.inner_lr:

    w direction      grad_w L_train(w, alpha)                          (the weights train on training data)
    alpha, second    d/d alpha L_val(w - xi grad_w L_train(w, alpha), alpha)   (through the lookahead step)
    alpha, first     grad_alpha L_val(w, alpha)                        (learner.first_order)

The outer step (Adam / SGD) moves both along these directions. After the search (`after_run`, with
learner.retrain_iterations) the cell is discretised (metarl.nets.cells.derive_genotype, RUN_DIR/genotype.json) and
the derived network is trained from scratch on the same data, plain training, in RUN_DIR/retrain.
"""
from __future__ import annotations

import copy
from typing import Any

import torch

from metarl.algorithms.base import InnerLoopLearner, as_steps, at, sgd_step
from metarl.algorithms.rules import Algorithm
from metarl.core.errors import ConfigError
from metarl.core.executor import TaskExecutor
from metarl.core.files import atomic_write_text
from metarl.core.params import MetaParams, Params

ARCH = "alphas"


class ArchitectureSearch(InnerLoopLearner):
    def __init__(self, objective, init_params: Params, inner_lr: float = 0.01, first_order: bool = False,
                 executor: TaskExecutor | None = None):
        if ARCH not in init_params:
            raise ValueError("architecture search needs a searchable network (model.arch cells without a genotype)")
        super().__init__(objective, init_params, executor)
        self.inner_lr, self.first_order = float(inner_lr), bool(first_order)

    def init_meta_params(self) -> MetaParams:
        return {"theta": {k: v.clone() for k, v in self._init.items() if k != ARCH},
                "arch": {ARCH: self._init[ARCH].clone()}}

    def start(self, meta: MetaParams) -> Params:
        return {**meta["theta"], **meta["arch"]}

    def step(self, meta: MetaParams, params: Params, data: Any, s: int) -> Params:
        """A plain SGD step of the weights on the support loss (the architecture stays)."""
        return sgd_step(self.objective, params, data, self.inner_lr, fixed=(ARCH,))

    def meta_gradient(self, meta: MetaParams, support: Any, query: Any):
        return self.executor.mean_over_tasks(self._one, meta, at(as_steps(support), 0), at(as_steps(query), 0))

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


def check(cfg, family) -> None:
    if cfg.model.arch != "cells" or cfg.model.genotype:
        raise ConfigError("learner.algo darts searches model.arch cells with no model.genotype")


def build(cfg, objective, model, init, executor) -> ArchitectureSearch:
    return ArchitectureSearch(objective, init, cfg.learner.inner_lr, cfg.learner.first_order, executor)


def retrain(trainer, result: dict, console_write=None) -> dict:
    """With learner.retrain_iterations: derive the searched cell (RUN_DIR/genotype.json) and train that network
    from scratch on the same data, plain training (learner.algo reweight, weighting none), in RUN_DIR/retrain;
    the result then holds "genotype" and the retraining's result as "retrain"."""
    from metarl.nets.cells import derive_genotype, format_genotype, genotype_json

    cfg = trainer.cfg
    if not cfg.learner.retrain_iterations or result["stopped_early"]:
        return result
    alphas = trainer.meta["arch"][ARCH]
    genotype = derive_genotype(alphas, cfg.model.nodes)
    if trainer.rank == 0:
        atomic_write_text(trainer.run_dir / "genotype.json", genotype_json(genotype, alphas, cfg.model.nodes) + "\n")
    again = copy.deepcopy(cfg)
    again.model.genotype = format_genotype(genotype)
    again.learner.algo, again.learner.weighting, again.learner.first_order = "reweight", "none", False
    again.learner.retrain_iterations, again.train.iterations = 0, cfg.learner.retrain_iterations
    again.run_dir, again.name = str(trainer.run_dir / "retrain"), f"{cfg.run_name()}-retrain"
    result["genotype"] = again.model.genotype
    result["retrain"] = type(trainer)(again.validate(), console_write).run()
    return result


SPEC = Algorithm(name="darts", title="DARTS", build=build, check=check, kinds=("supervised",), after_run=retrain,
                 searches_cells=True, summary="DARTS: differentiable search of a conv cell, then its retraining",
                 reads=("learner.inner_lr", "learner.first_order", "learner.retrain_iterations"))
