"""MAML (second order), first-order MAML and Meta-SGD, as one vmapped function of the meta-parameters.

For each task i (vmapped over the task batch):

    phi_0 = theta
    phi_{s+1} = phi_s - alpha * grad L_support(phi_s)       alpha: a float, or learned per parameter (Meta-SGD)
    L_i = L_query(phi_n)                                   ("last"), or mean_s L_query(phi_s), s = 1..n ("mean"),
                                                           or sum_s w_s L_query(phi_s) (step_loss_weights)

meta_loss = mean_i L_i. The inner gradient stays in the graph, so the meta-gradient is second order; with
`first_order=True` it is detached (FOMAML): d phi_n / d theta is then taken as the identity.

Meta-SGD learns log(alpha) per parameter entry (meta-parameter group "log_inner_lr"): the step sizes stay
positive and the outer optimiser's updates are relative. Learned raw, Adam moves alpha = 0.01 by ~1e-3 per
iteration (10%), and multi-step inner loops then cross their stability limit and diverge within a few
hundred iterations.

With `learn_step_scale`, step s also multiplies its step sizes by exp(log_step_scale[s]) (one learned scalar
per inner step; evaluation beyond the trained number of steps reuses the last one), so an early step can be
long while later steps stay within the stability limit.

With `inner_lr_per_step` (Meta-SGD only), each inner step has its own learned step size per parameter entry
("log_inner_lr" holds a leading axis of length inner_steps; evaluation beyond the trained number of steps
reuses the last step's), so the first step's sizes need not compromise with the stability of later steps.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch.func import grad, vmap

from metarl.learners.base import MetaLearner, MetaParams, Metrics, Objective, Params

StepLoss = Literal["last", "mean"]


class MAML(MetaLearner):
    def __init__(
        self,
        objective: Objective,
        init_params: Params,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        first_order: bool = False,
        learn_inner_lr: bool = False,
        step_loss: StepLoss = "last",
        learn_step_scale: bool = False,
        step_loss_weights: tuple[float, ...] = (),
        inner_lr_per_step: bool = False,
    ):
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be at least 1, got {inner_steps}")
        if not inner_lr > 0:
            raise ValueError(f"inner_lr must be positive, got {inner_lr}")
        if step_loss not in ("last", "mean"):
            raise ValueError(f"step_loss must be 'last' or 'mean', got {step_loss!r}")
        if inner_lr_per_step and not learn_inner_lr:
            raise ValueError("inner_lr_per_step needs learn_inner_lr (per-step sizes are learned Meta-SGD sizes)")
        self.objective = objective
        self._init = {k: v.detach().clone() for k, v in init_params.items()}
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.first_order = bool(first_order)
        self.learn_inner_lr = bool(learn_inner_lr)
        self.step_loss = step_loss
        self.learn_step_scale = bool(learn_step_scale)
        self.inner_lr_per_step = bool(inner_lr_per_step)
        if step_loss_weights:
            if len(step_loss_weights) != inner_steps or min(step_loss_weights) < 0 or sum(step_loss_weights) <= 0:
                raise ValueError(f"step_loss_weights needs {inner_steps} non-negative weights with a positive sum, "
                                 f"got {list(step_loss_weights)}")
        elif step_loss == "mean":
            step_loss_weights = (1.0,) * inner_steps
        else:
            step_loss_weights = (0.0,) * (inner_steps - 1) + (1.0,)
        total = sum(step_loss_weights)
        self.step_loss_weights = tuple(w / total for w in step_loss_weights)

    def init_meta_params(self) -> MetaParams:
        meta: MetaParams = {"theta": {k: v.clone() for k, v in self._init.items()}}
        if self.learn_inner_lr:
            lead = (self.inner_steps,) if self.inner_lr_per_step else ()
            meta["log_inner_lr"] = {k: torch.full((*lead, *v.shape), math.log(self.inner_lr), dtype=v.dtype,
                                                  device=v.device) for k, v in self._init.items()}
        if self.learn_step_scale:
            any_param = next(iter(self._init.values()))
            meta["log_step_scale"] = {"steps": torch.zeros(self.inner_steps, dtype=any_param.dtype, device=any_param.device)}
        return meta

    def _lrs(self, meta: MetaParams) -> tuple[dict[str, Any], torch.Tensor | None]:
        """Step sizes per parameter (with a leading step axis when inner_lr_per_step), and the per-step
        multipliers (None when not learned)."""
        scales = meta["log_step_scale"]["steps"].exp() if self.learn_step_scale else None
        if self.learn_inner_lr:
            return {k: v.exp() for k, v in meta["log_inner_lr"].items()}, scales
        return {k: self.inner_lr for k in meta["theta"]}, scales

    def _path_one(self, theta: Params, lrs: tuple[dict[str, Any], torch.Tensor | None], support: Any,
                  steps: int) -> list[Params]:
        """Adaptation of ONE task: the parameters after 0..steps inner steps."""
        lr, scales = lrs
        params, path = theta, [theta]
        for s in range(steps):
            g = grad(self.objective.inner_loss)(params, support)
            if self.first_order:
                g = {k: v.detach() for k, v in g.items()}
            i = min(s, self.inner_steps - 1)  # steps past the trained ones reuse the last step's sizes
            scale = 1.0 if scales is None else scales[i]
            lr_s = {k: v[i] for k, v in lr.items()} if self.inner_lr_per_step else lr
            params = {k: params[k] - (lr_s[k] * scale) * g[k] for k in params}
            path.append(params)
        return path

    def adapt_path(self, meta: MetaParams, support: Any, steps: int) -> list[Params]:
        theta, lrs = meta["theta"], self._lrs(meta)
        return vmap(lambda s: self._path_one(theta, lrs, s, steps))(support)

    def _task_loss(self, theta: Params, lrs: tuple[dict[str, Any], torch.Tensor | None], support: Any, query: Any) -> tuple[torch.Tensor, Metrics]:
        path = self._path_one(theta, lrs, support, self.inner_steps)
        if self.step_loss_weights[-1] == 1.0:
            return self.objective.outer_loss(path[-1], query)
        loss, metrics = 0.0, {}
        for w, p in zip(self.step_loss_weights, path[1:]):
            if w > 0 or p is path[-1]:
                step_loss, metrics = self.objective.outer_loss(p, query)
                loss = loss + w * step_loss
        return loss, metrics

    def meta_loss(self, meta: MetaParams, support: Any, query: Any) -> tuple[torch.Tensor, Metrics]:
        theta, lrs = meta["theta"], self._lrs(meta)
        losses, metrics = vmap(lambda s, q: self._task_loss(theta, lrs, s, q))(support, query)
        return losses.mean(), {k: v.mean() for k, v in metrics.items()}
