"""MAML (second order), first-order MAML and Meta-SGD: an inner step is gradient descent on the inner loss.

    phi_0     = theta
    phi_{s+1} = phi_s - alpha_s * grad L_inner(phi_s, support_s)
    L         = sum_s w_s L_outer(phi_s, query_s)                 (learners.base: one path for every phase)

The inner gradient stays in the graph, so the meta-gradient is second order; `first_order=True` detaches it
(FOMAML: d phi / d theta is taken as the identity). With an RL objective this is MAML-RL: support_s is the
episodes the policy phi_s collected, L_outer a TRPO / PPO surrogate (metarl.rl).

Learned augmentation (`augmentation`: none, fixed, learned): the inner loss sees the support images under a
random affine transform (metarl.augment) whose magnitudes are fixed, or the meta-parameter group "augment",
reached by the outer loss through the inner step (second order: d phi / d m = -alpha d grad L_inner / d m).

Hypergradients (how d L / d theta goes through the inner loop; tests/test_hypergradients.py checks each
against closed forms and finite differences in float64):
  unrolled    backprop through all k steps (second order; first_order: FOMAML)
  truncated   the inner gradients of steps 1..k-j detached: second order through the last j steps only
              (d phi_k / d theta = prod over the last j steps of (I - alpha H_s))
  implicit    iMAML: phi_{s+1} = phi_s - alpha (grad L_inner(phi_s) + lambda (phi_s - theta)), then
              d L / d theta = (I + H(phi_k) / lambda)^-1 grad L_outer(phi_k), the exact hypergradient at the
              proximal inner optimum, solved by conjugate gradient with Hessian-vector products: no graph
              through the steps, so memory does not grow with k (one task at a time).

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

from metarl.augment import augmented, check_augmentation, current_magnitudes, magnitudes_tensor
from metarl.learners.base import Learner, Objective, mean_over_tasks, normalised_weights
from metarl.outer import conjugate_gradient
from metarl.params import MetaParams, Params

#: how the meta-gradient goes through the inner loop (learner.hypergradient)
HYPERGRADIENTS = ("unrolled", "truncated", "implicit")


class MAML(Learner):
    def __init__(self, objective: Objective, init_params: Params, inner_lr: float = 0.01, inner_steps: int = 1,
                 first_order: bool = False, learn_inner_lr: bool = False, inner_lr_per_step: bool = False,
                 learn_step_scale: bool = False, step_lr_scales: tuple[float, ...] = (),
                 step_loss_weights: tuple[float, ...] = (), hypergradient: str = "unrolled", truncate_steps: int = 1,
                 implicit_lambda: float = 1.0, implicit_cg_steps: int = 5, augmentation: str = "none",
                 augment_magnitudes: tuple[float, ...] = (0.2, 0.1, 0.1, 0.1)):
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
        if hypergradient not in HYPERGRADIENTS:
            raise ValueError(f"hypergradient must be one of {', '.join(HYPERGRADIENTS)}, got {hypergradient!r}")
        if hypergradient == "implicit" and (learn_inner_lr or learn_step_scale or self.step_loss_weights[-1] != 1.0):
            raise ValueError("the implicit hypergradient needs a fixed step size and the outer loss of the last step")
        self.hypergradient, self.truncate_steps = hypergradient, int(truncate_steps)
        self.implicit_lambda, self.implicit_cg_steps = float(implicit_lambda), int(implicit_cg_steps)
        self.augment_magnitudes = check_augmentation(augmentation, augment_magnitudes)
        if augmentation == "learned" and hypergradient == "implicit":
            raise ValueError("learned augmentation needs the unrolled or truncated hypergradient (the implicit one "
                             "differentiates the initialisation only)")
        self.augmentation = augmentation

    def init_meta_params(self) -> MetaParams:
        meta: MetaParams = {"theta": {k: v.clone() for k, v in self._init.items()}}
        if self.learn_inner_lr:
            lead = (self.inner_steps,) if self.inner_lr_per_step else ()
            meta["log_inner_lr"] = {k: torch.full((*lead, *v.shape), math.log(self.inner_lr), dtype=v.dtype,
                                                  device=v.device) for k, v in self._init.items()}
        if self.learn_step_scale:
            ref = next(iter(self._init.values()))
            meta["log_step_scale"] = {"steps": torch.zeros(self.inner_steps, dtype=ref.dtype, device=ref.device)}
        if self.augmentation == "learned":
            meta["augment"] = {"magnitudes": magnitudes_tensor(self.augment_magnitudes, next(iter(self._init.values())))}
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
        # truncated: steps before the last truncate_steps ones are first order
        first_order = self.first_order or (self.hypergradient == "truncated"
                                           and s < self.inner_steps - self.truncate_steps)
        g = self.inner_gradient(params, self.support_data(meta, data), first_order)
        lr = self.step_size(meta, s)
        if self.hypergradient == "implicit":  # the proximal term: descend L_inner + lambda/2 |phi - theta|^2
            theta = meta["theta"]
            return {k: params[k] - lr[k] * (g[k] + self.implicit_lambda * (params[k] - theta[k])) for k in params}
        return {k: params[k] - lr[k] * g[k] for k in params}

    def support_data(self, meta: MetaParams, data: Any) -> Any:
        """The data the inner loss sees: support images augmented when the source added noise (x, y, u)."""
        if self.augmentation == "none":
            return data
        return augmented(data, current_magnitudes(meta, self.augmentation, self.augment_magnitudes))

    def inner_gradient(self, params: Params, data: Any, first_order: bool | None = None) -> Params:
        """grad L_inner(params, data), in the graph unless first order (or no graph is being recorded)."""
        first_order = self.first_order if first_order is None else first_order
        if torch._C._functorch.peek_interpreter_stack() is not None:  # under vmap / grad: the functional form
            g = grad(self.objective.inner_loss)(params, data)
            return {k: v.detach() for k, v in g.items()} if first_order else g
        # one task, plain autograd: what recompute_steps' checkpointing needs (torch.func.grad refuses saved
        # tensor hooks), and less overhead per step
        create_graph = not first_order and torch.is_grad_enabled()
        live = {k: v if v.requires_grad and create_graph else v.detach().requires_grad_() for k, v in params.items()}
        with torch.enable_grad():
            loss = self.objective.inner_loss(live, data)
            g = torch.autograd.grad(loss, list(live.values()), create_graph=create_graph, allow_unused=True)
        return {k: torch.zeros_like(v) if d is None else d for (k, v), d in zip(live.items(), g)}

    def meta_gradient(self, meta: MetaParams, support: Any, query: Any):
        if self.hypergradient != "implicit":
            return super().meta_gradient(meta, support, query)
        return mean_over_tasks(self._implicit_task, meta, support, query, threads=self.batching == "threads")

    def _implicit_task(self, meta: MetaParams, support: Any, query: Any):
        """iMAML's hypergradient of one task (see the module docstring); mean_over_tasks averages them."""
        with torch.no_grad():
            phi = self.path(meta, [support], self.inner_steps)[-1]
        theta = meta["theta"]
        phi = {name: phi[name].detach().requires_grad_() for name in theta}
        sizes = [p.numel() for p in theta.values()]
        with torch.enable_grad():
            loss, metrics = self.objective.outer_loss(phi, query)
            g_out = flat_cat(torch.autograd.grad(loss, list(phi.values()), allow_unused=True), phi)
            inner = self.objective.inner_loss(phi, self.support_data(meta, support))
            g_in = torch.autograd.grad(inner, list(phi.values()), create_graph=True, allow_unused=True)
            g_in = [torch.zeros_like(p) if g is None else g for g, p in zip(g_in, phi.values())]

            def product(v: torch.Tensor) -> torch.Tensor:  # (I + H / lambda) v
                dot = sum((g * u.view_as(g)).sum() for g, u in zip(g_in, v.split(sizes)))
                hv = torch.autograd.grad(dot, list(phi.values()), retain_graph=True, allow_unused=True)
                return v + flat_cat(hv, phi) / self.implicit_lambda

            x = conjugate_gradient(product, g_out, self.implicit_cg_steps, tol=0.0).detach()
        grads = {name: t.view_as(p) for (name, p), t in zip(theta.items(), x.split(sizes))}
        return {"theta": grads}, loss.detach(), {m: v.detach() for m, v in metrics.items()}


def flat_cat(grads, like: Params) -> torch.Tensor:
    """Gradients (None = zero) as one flat vector in the order of `like`."""
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, like.values())])
