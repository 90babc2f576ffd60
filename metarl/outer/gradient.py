"""Gradient outer steps: Adam or SGD on the meta-gradient, on the flat meta-parameter vector.

    for epoch in 1..epochs:                       (one epoch: MAML / Meta-SGD / LSTM / ANIL / ProtoNets with Adam,
        for part in minibatches(batch, epoch):     Reptile's interpolation as SGD with lr = epsilon)
            g = meta_gradient(flat, part)          (all-reduced over ranks; clipped to grad_clip)
            flat <- optimizer.step(flat, g, lr(iteration))
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from metarl.algorithms.base import Batch
from metarl.core.numerics import FlatAdam, FlatSGD, cosine_lr
from metarl.outer.problem import MetaProblem, check_finite


def schedule(lr: float, decay: str, iterations: int) -> Callable[[int], float]:
    """The learning rate at each iteration: constant, or cosine decay to 0 over the run."""
    return (lambda it: cosine_lr(lr, it, iterations)) if decay == "cosine" else (lambda it: lr)


class GradientStep:
    """`epochs` passes of a flat Adam / SGD per batch, each pass one step per minibatch of tasks (a fresh
    meta-gradient each; nothing applied when the loss or the gradient is not finite). The learning rate comes
    from `lr(iteration)`. minibatches > 1: each pass splits the tasks into that many groups, in an order drawn
    from the iteration's own generator (PPO's minibatch epochs). The groups are of the whole batch's tasks
    (Batch.first, .total): under torch.distributed each rank computes its members of a group, weighted by their
    share of it, so W ranks take the steps one process would."""

    def __init__(self, optimizer: FlatAdam | FlatSGD, lr: Callable[[int], float], epochs: int = 1,
                 grad_clip: float = 0.0, minibatches: int = 1):
        self.optimizer, self.lr, self.epochs, self.grad_clip = optimizer, lr, int(epochs), float(grad_clip)
        self.minibatches = int(minibatches)

    def _parts(self, batch: Batch, iteration: int, epoch: int) -> list[tuple[Batch, float | None]]:
        """(this rank's part of each minibatch, its weight in the minibatch's mean; None: its batch share)."""
        if self.minibatches == 1:
            return [(batch, None)]
        total, n = batch.total_tasks, batch.num_tasks
        if total < self.minibatches:
            raise ValueError(f"outer.minibatches {self.minibatches} is more than the {total} tasks of a batch")
        order = torch.randperm(total, generator=torch.Generator().manual_seed(iteration * 1009 + epoch))
        parts = []
        for group in order.tensor_split(self.minibatches):
            mine = group[(group >= batch.first) & (group < batch.first + n)] - batch.first
            # a rank with no member still joins the group's all_reduce, with weight 0 (any task computes it)
            parts.append((batch.take(mine if len(mine) else torch.zeros(1, dtype=torch.long)), len(mine) / len(group)))
        return parts

    def step(self, flat: torch.Tensor, batch: Batch, problem: MetaProblem, iteration: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for epoch in range(self.epochs):
            for i, (part, share) in enumerate(self._parts(batch, iteration, epoch)):
                g, loss, metrics = problem.gradient(flat, part, share)
                norm = float(torch.linalg.vector_norm(g))
                loss_f = float(loss)
                check_finite(loss_f, norm)
                if self.grad_clip > 0 and norm > self.grad_clip:  # clip_grad_norm_'s rule, with the norm at hand
                    g = g * (self.grad_clip / (norm + 1e-6))
                self.optimizer.step(g, self.lr(iteration))
                if epoch == 0 and i == 0:
                    out = {"meta_loss": loss_f, "grad_norm": norm, **{k: float(v) for k, v in metrics.items()}}
                elif epoch == self.epochs - 1 and self.epochs > 1:
                    out["meta_loss_last_epoch"] = loss_f
                    out.update({f"{k}_last_epoch": float(v) for k, v in metrics.items() if k == "kl"})
        return out

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


def build_adam(cfg, flat: torch.Tensor) -> GradientStep:
    o = cfg.outer
    return GradientStep(FlatAdam(flat), schedule(o.lr, o.lr_decay, cfg.train.iterations), o.epochs, o.grad_clip,
                        o.minibatches)


def build_sgd(cfg, flat: torch.Tensor) -> GradientStep:
    o = cfg.outer
    return GradientStep(FlatSGD(flat), schedule(o.lr, o.lr_decay, cfg.train.iterations), o.epochs, o.grad_clip,
                        o.minibatches)
