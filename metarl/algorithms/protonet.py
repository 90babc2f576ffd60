"""Prototypical Networks (Snell et al. 2017): no inner gradient step; a task's classifier is read off its
support set. With f the network without its head (the embedding; meta-parameters theta) and S_k the support
examples of class k:

    c_k       = mean_{x in S_k} f(x)                                   the class prototypes
    p(k | x)  = softmax_k(-|f(x) - c_k|^2) = softmax_k(2 c_k . f(x) - |c_k|^2)    (|f(x)|^2 is common to all k)
    L         = mean over tasks of the query cross-entropy;  outer step Adam / SGD on d L / d theta

So adapting is one step that sets the network's linear head to W_k = 2 c_k, b_k = -|c_k|^2 (the equivalence of
Snell et al., section 2.4): the same objective, evaluator and task batching as every learner. Before that step
the head is zero (every class equally likely: the chance level); further steps change nothing. A class with no
support example (a test task narrower than the head, after training on more ways: Omniglot's train_ways) gets
b_k = -inf, probability 0; before the step every one of the head's classes is equally likely.
"""
from __future__ import annotations

from typing import Any

import torch

from metarl.algorithms.base import InnerLoopLearner
from metarl.algorithms.rules import Algorithm
from metarl.core.executor import TaskExecutor
from metarl.core.params import MetaParams, Params


class PrototypicalNetworks(InnerLoopLearner):
    def __init__(self, objective, init_params: Params, features, head_names: tuple[str, str],
                 executor: TaskExecutor | None = None):
        self.weight_name, self.bias_name = head_names
        self.ways, self.feature_dim = init_params[self.weight_name].shape
        super().__init__(objective, {k: v for k, v in init_params.items() if k not in head_names}, executor)
        #: features(params, x) -> (B, d): the embedding (the network without its head)
        self.features = features

    def start(self, meta: MetaParams) -> Params:
        theta = meta["theta"]
        ref = next(iter(theta.values()))
        return {**theta, self.weight_name: ref.new_zeros(self.ways, self.feature_dim),
                self.bias_name: ref.new_zeros(self.ways)}

    def step(self, meta: MetaParams, params: Params, data: Any, s: int) -> Params:
        x, y = data[0], data[1]
        f = self.features(params, x)
        onehot = (y.unsqueeze(-1) == torch.arange(self.ways, device=y.device)).to(f.dtype)  # (B, ways)
        counts = onehot.sum(0)
        prototypes = (onehot.transpose(0, 1) @ f) / counts.clamp_min(1).unsqueeze(-1)
        bias = -(prototypes * prototypes).sum(-1)
        # A head wider than the task (tasks of varying class counts): its absent classes get probability 0.
        bias = torch.where(counts > 0, bias, torch.full_like(bias, float("-inf")))
        return {**params, self.weight_name: 2 * prototypes, self.bias_name: bias}


def build(cfg, objective, model, init: Params, executor: TaskExecutor) -> PrototypicalNetworks:
    if getattr(objective, "loss", None) != "cross_entropy" or not hasattr(model, "features"):
        raise ValueError("learner.algo protonet classifies: a classification family (e.g. Omniglot) with "
                         "model.arch conv")
    return PrototypicalNetworks(objective, init, model.features, model.head_names, executor)


SPEC = Algorithm(name="protonet", title="ProtoNets", build=build, kinds=("supervised",), reads=(),
                 head_from_support=True,
                 summary="Prototypical Networks: the head from the support set's class means (Snell et al. 2017)")
