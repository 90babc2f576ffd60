"""MAML (second order), first-order MAML and Meta-SGD: an inner step is gradient descent on the inner loss.

    phi_0     = theta
    phi_{s+1} = phi_s - alpha_s * grad L_inner(phi_s, support_s)
    L         = sum_s w_s L_outer(phi_s, query_s)                 (learners.base: one path for every phase)

The inner gradient stays in the graph, so the meta-gradient is second order; `first_order=True` detaches it
(FOMAML: d phi / d theta is taken as the identity). With an RL objective this is MAML-RL: support_s is the
episodes the policy phi_s collected, L_outer a TRPO / PPO surrogate (metarl.rl).

The step size alpha_s of parameter entry j is  lr_j * exp(log_step_scale[s]) * step_lr_scales[s]:
  lr_j             inner_lr, or learned per entry (Meta-SGD, meta-parameter group "log_inner_lr", in log space:
                   positive, and Adam's updates are relative; learned raw, multi-step loops cross their
                   stability limit within a few hundred iterations), with `inner_lr_per_step` one set per step;
  log_step_scale   `learn_step_scale`: one learned multiplier per step (an early step long, later ones short);
  step_lr_scales   fixed multipliers per step (e.g. (1, 0.2): later steps 5x shorter).
Steps past the trained ones (evaluation) reuse the last step's sizes.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch.func import grad

from metarl.learners.base import Learner, Objective, normalised_weights
from metarl.params import MetaParams, Params


class MAML(Learner):
    def __init__(self, objective: Objective, init_params: Params, inner_lr: float = 0.01, inner_steps: int = 1,
                 first_order: bool = False, learn_inner_lr: bool = False, inner_lr_per_step: bool = False,
                 learn_step_scale: bool = False, step_lr_scales: tuple[float, ...] = (),
                 step_loss_weights: tuple[float, ...] = ()):
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be at least 1, got {inner_steps}")
        if not inner_lr > 0:
            raise ValueError(f"inner_lr must be positive, got {inner_lr}")
        if inner_lr_per_step and not learn_inner_lr:
            raise ValueError("inner_lr_per_step needs learn_inner_lr (per-step sizes are learned Meta-SGD sizes)")
        if any(not x > 0 for x in step_lr_scales):
            raise ValueError(f"step_lr_scales must be positive, got {list(step_lr_scales)}")
        self.objective = objective
        self._init = {k: v.detach().clone() for k, v in init_params.items()}
        self.inner_lr, self.inner_steps, self.first_order = float(inner_lr), int(inner_steps), bool(first_order)
        self.learn_inner_lr, self.inner_lr_per_step = bool(learn_inner_lr), bool(inner_lr_per_step)
        self.learn_step_scale = bool(learn_step_scale)
        self.step_lr_scales = tuple(float(x) for x in step_lr_scales)
        self.step_loss_weights = normalised_weights(tuple(step_loss_weights), self.inner_steps)

    def init_meta_params(self) -> MetaParams:
        meta: MetaParams = {"theta": {k: v.clone() for k, v in self._init.items()}}
        if self.learn_inner_lr:
            lead = (self.inner_steps,) if self.inner_lr_per_step else ()
            meta["log_inner_lr"] = {k: torch.full((*lead, *v.shape), math.log(self.inner_lr), dtype=v.dtype,
                                                  device=v.device) for k, v in self._init.items()}
        if self.learn_step_scale:
            ref = next(iter(self._init.values()))
            meta["log_step_scale"] = {"steps": torch.zeros(self.inner_steps, dtype=ref.dtype, device=ref.device)}
        return meta

    def step_size(self, meta: MetaParams, s: int) -> dict[str, Any]:
        """The step size of inner step s for each parameter (a float, or a tensor shaped like it)."""
        i = min(s, self.inner_steps - 1)
        scale = self.step_lr_scales[min(s, len(self.step_lr_scales) - 1)] if self.step_lr_scales else 1.0
        if self.learn_step_scale:
            scale = scale * meta["log_step_scale"]["steps"][i].exp()
        if not self.learn_inner_lr:
            return {k: self.inner_lr * scale for k in meta["theta"]}
        logs = meta["log_inner_lr"]
        return {k: (v[i] if self.inner_lr_per_step else v).exp() * scale for k, v in logs.items()}

    def start(self, meta: MetaParams) -> Params:
        return meta["theta"]

    def step(self, meta: MetaParams, params: Params, data: Any, s: int) -> Params:
        g = self.inner_gradient(params, data)
        lr = self.step_size(meta, s)
        return {k: params[k] - lr[k] * g[k] for k in params}

    def inner_gradient(self, params: Params, data: Any) -> Params:
        """grad L_inner(params, data), in the graph unless first_order (or no graph is being recorded)."""
        if torch._C._functorch.peek_interpreter_stack() is not None:  # under vmap / grad: the functional form
            g = grad(self.objective.inner_loss)(params, data)
            return {k: v.detach() for k, v in g.items()} if self.first_order else g
        # one task, plain autograd: what recompute_steps' checkpointing needs (torch.func.grad refuses saved
        # tensor hooks), and less overhead per step
        create_graph = not self.first_order and torch.is_grad_enabled()
        live = {k: v if v.requires_grad and create_graph else v.detach().requires_grad_() for k, v in params.items()}
        with torch.enable_grad():
            loss = self.objective.inner_loss(live, data)
            g = torch.autograd.grad(loss, list(live.values()), create_graph=create_graph, allow_unused=True)
        return {k: torch.zeros_like(v) if d is None else d for (k, v), d in zip(live.items(), g)}
