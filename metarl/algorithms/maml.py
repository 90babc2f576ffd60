"""MAML (second order), first-order MAML and Meta-SGD: an inner step is gradient descent on the inner loss.

    phi_0     = theta
    phi_{s+1} = phi_s - alpha_s * grad L_inner(phi_s, support_s)
    L         = sum_s w_s L_outer(phi_s, query_s)                 (algorithms.base: one path for every phase)

The inner gradient stays in the graph, so the meta-gradient is second order; `first_order=True` detaches it
(FOMAML: d phi / d theta is taken as the identity). With an RL objective this is MAML-RL: support_s is the
episodes the policy phi_s collected, L_outer a TRPO / PPO surrogate (metarl.rl).

Learned augmentation (`augmentation`: none, fixed, learned): the inner loss sees the support images under a
random affine transform (metarl.nets.augment) whose magnitudes are fixed, or the meta-parameter group "augment",
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

Outer steps: any (Adam / SGD on the meta-gradient; RL: PPO on the clipped surrogate, TRPO). For TRPO the
learner offers the KL's Hessian-vector products as J^T F J (`kl_curvature`, outer.hvp gauss_newton): one inner
step with a fixed step size.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch.func import grad, vmap
from torch.utils._pytree import tree_flatten

from metarl.algorithms.base import Batch, InnerLoopLearner, Objective, as_steps, at, normalised_weights
from metarl.algorithms.rules import Algorithm, check_augmentation, check_step_loss, reject_set, step_loss_weights
from metarl.core.errors import ConfigError
from metarl.core.executor import TaskExecutor
from metarl.core.numerics import conjugate_gradient
from metarl.core.params import MetaParams, Params
from metarl.nets.augment import augmented, current_magnitudes, magnitudes_tensor


class MAML(InnerLoopLearner):
    def __init__(self, objective: Objective, init_params: Params, inner_lr: float = 0.01, inner_steps: int = 1,
                 first_order: bool = False, learn_inner_lr: bool = False, inner_lr_per_step: bool = False,
                 learn_step_scale: bool = False, step_lr_scales: tuple[float, ...] = (),
                 step_loss_weights: tuple[float, ...] = (), hypergradient: str = "unrolled", truncate_steps: int = 1,
                 implicit_lambda: float = 1.0, implicit_cg_steps: int = 5, augmentation: str = "none",
                 augment_magnitudes: tuple[float, ...] = (0.2, 0.1, 0.1, 0.1), adapt_only: tuple[str, ...] = (),
                 executor: TaskExecutor | None = None):
        super().__init__(objective, init_params, executor)
        #: the parameters the inner steps move (empty: all of them; ANIL: the head)
        self.adapt_only = tuple(adapt_only)
        self.inner_lr, self.inner_steps, self.first_order = float(inner_lr), int(inner_steps), bool(first_order)
        self.learn_inner_lr, self.inner_lr_per_step = bool(learn_inner_lr), bool(inner_lr_per_step)
        self.learn_step_scale = bool(learn_step_scale)
        self.step_lr_scales = tuple(float(x) for x in step_lr_scales)
        self.step_loss_weights = normalised_weights(tuple(step_loss_weights), self.inner_steps)
        self.hypergradient, self.truncate_steps = hypergradient, int(truncate_steps)
        self.implicit_lambda, self.implicit_cg_steps = float(implicit_lambda), int(implicit_cg_steps)
        self.augmentation, self.augment_magnitudes = augmentation, tuple(float(m) for m in augment_magnitudes)

    def init_meta_params(self) -> MetaParams:
        meta = super().init_meta_params()
        ref = next(iter(self._init.values()))
        if self.learn_inner_lr:
            lead = (self.inner_steps,) if self.inner_lr_per_step else ()
            meta["log_inner_lr"] = {k: torch.full((*lead, *v.shape), math.log(self.inner_lr), dtype=v.dtype,
                                                  device=v.device) for k, v in self._init.items()}
        if self.learn_step_scale:
            meta["log_step_scale"] = {"steps": torch.zeros(self.inner_steps, dtype=ref.dtype, device=ref.device)}
        if self.augmentation == "learned":
            meta["augment"] = {"magnitudes": magnitudes_tensor(self.augment_magnitudes, ref)}
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

    def step(self, meta: MetaParams, params: Params, data: Any, s: int) -> Params:
        # truncated: steps before the last truncate_steps ones are first order
        first_order = self.first_order or (self.hypergradient == "truncated"
                                           and s < self.inner_steps - self.truncate_steps)
        g = self.inner_gradient(params, self.support_data(meta, data), first_order)
        lr = self.step_size(meta, s)
        if self.hypergradient == "implicit":  # the proximal term: descend L_inner + lambda/2 |phi - theta|^2
            theta = meta["theta"]
            return {k: params[k] - lr[k] * (g[k] + self.implicit_lambda * (params[k] - theta[k])) for k in params}
        return {**params, **{k: params[k] - lr[k] * g[k] for k in g}}

    def support_data(self, meta: MetaParams, data: Any) -> Any:
        """The data the inner loss sees: support images augmented when the source added noise (x, y, u)."""
        if self.augmentation == "none":
            return data
        return augmented(data, current_magnitudes(meta, self.augmentation, self.augment_magnitudes))

    def inner_gradient(self, params: Params, data: Any, first_order: bool | None = None) -> Params:
        """grad L_inner(params, data) in the adapted parameters, in the graph unless first order (or no graph
        is being recorded)."""
        first_order = self.first_order if first_order is None else first_order
        moving = {k: params[k] for k in self.adapt_only} if self.adapt_only else params
        if torch._C._functorch.peek_interpreter_stack() is not None:  # under vmap / grad: the functional form
            g = grad(lambda m: self.objective.inner_loss({**params, **m}, data))(moving)
            return {k: v.detach() for k, v in g.items()} if first_order else g
        # one task, plain autograd: what recomputed steps' checkpointing needs (torch.func.grad refuses saved
        # tensor hooks), and less overhead per step
        create_graph = not first_order and torch.is_grad_enabled()
        live = {k: v if v.requires_grad and create_graph else v.detach().requires_grad_() for k, v in moving.items()}
        with torch.enable_grad():
            loss = self.objective.inner_loss({**params, **live}, data)
            g = torch.autograd.grad(loss, list(live.values()), create_graph=create_graph, allow_unused=True)
        return {k: torch.zeros_like(v) if d is None else d for (k, v), d in zip(live.items(), g)}

    def meta_gradient(self, meta: MetaParams, support: Any, query: Any):
        if self.hypergradient != "implicit":
            return super().meta_gradient(meta, support, query)
        return self.executor.mean_over_tasks(self._implicit_task, meta, at(as_steps(support), 0), at(as_steps(query), 0))

    def kl_curvature(self, meta: MetaParams, batch: Batch):
        """TRPO's KL Hessian-vector products as J^T F J (GaussNewtonKL): one inner step, a fixed step size."""
        return GaussNewtonKL(self, meta, batch)

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


class GaussNewtonKL:
    """Products with the Hessian of the mean KL(pi_old || pi_phi(theta)) at the params where pi_old = pi_phi.

    There the KL's gradient in phi vanishes, so H = mean_i J_i^T F_i J_i exactly, with J_i = d phi_i / d theta
    = I - alpha H_inner,i (I for first order; symmetric) and F_i the KL Hessian in phi. The graphs are built
    once per TRPO step (theta copied per task, each task's inner gradient kept with its graph; the KL's gradient
    at phi likewise), so each product is three double-backward passes over the data (one for first order):
    no forward is recomputed inside conjugate gradient and no third-order backward through the adaptation is
    taken. For one inner step with a fixed step size (MAML)."""

    def __init__(self, learner: MAML, meta: dict, batch: Batch):
        objective, self.first_order = learner.objective, learner.first_order
        self.lr = learner.step_size(meta, 0)
        support, query = at(batch.support, 0), at(batch.query, 0)
        theta = meta["theta"]
        self.names = list(theta)
        n = tree_flatten(support)[0][0].shape[0]
        self.theta = [theta[k].detach().unsqueeze(0).repeat(n, *([1] * theta[k].dim())).requires_grad_()
                      for k in self.names]
        with torch.enable_grad():
            inner = vmap(objective.inner_loss)(dict(zip(self.names, self.theta)), support).sum()
            self.inner_grad = torch.autograd.grad(inner, self.theta, create_graph=not self.first_order)
            self.phi = [(t - self.lr[k] * g).detach().requires_grad_()
                        for k, t, g in zip(self.names, self.theta, self.inner_grad)]
            kl = vmap(lambda p, q: objective.outer_loss(p, q)[1]["kl"])(dict(zip(self.names, self.phi)), query).sum()
            self.kl_grad = torch.autograd.grad(kl, self.phi, create_graph=True)

    @staticmethod
    def _product(grads, leaves, vectors) -> tuple[torch.Tensor, ...]:
        """(d/d leaves) sum grads . vectors: each task's Hessian times its own vector."""
        return torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vectors)), leaves, retain_graph=True)

    def _jacobian(self, vectors):
        """J_i v_i = v_i - alpha H_inner,i v_i (J is symmetric: also J^T)."""
        if self.first_order:
            return vectors
        hv = self._product(self.inner_grad, self.theta, vectors)
        return [v - self.lr[k] * h for k, v, h in zip(self.names, vectors, hv)]

    def __call__(self, v: dict) -> dict:
        per_task = [v["theta"][k].unsqueeze(0).expand_as(t) for k, t in zip(self.names, self.theta)]
        fjv = self._product(self.kl_grad, self.phi, self._jacobian(per_task))
        return {"theta": {k: x.mean(0) for k, x in zip(self.names, self._jacobian(fjv))}}


def check(cfg, family) -> None:
    L, O = cfg.learner, cfg.outer
    if any(not x > 0 for x in L.step_lr_scales):
        raise ConfigError(f"learner.step_lr_scales must be positive, got {list(L.step_lr_scales)}")
    if L.inner_lr_per_step and not L.learn_inner_lr:
        raise ConfigError("learner.inner_lr_per_step needs learner.learn_inner_lr (per-step sizes are learned)")
    check_step_loss(cfg)
    check_augmentation(cfg, family)
    if L.hypergradient != "truncated":
        reject_set(cfg, ["learner.truncate_steps"], f"learner.hypergradient {L.hypergradient}")
    if L.hypergradient != "implicit":
        reject_set(cfg, ["learner.implicit_lambda", "learner.implicit_cg_steps"], f"learner.hypergradient {L.hypergradient}")
    if L.hypergradient != "unrolled" and L.first_order:
        raise ConfigError(f"learner.first_order is the first-order hypergradient: it does not combine with "
                          f"learner.hypergradient {L.hypergradient}")
    if L.hypergradient == "truncated" and not 1 <= L.truncate_steps < L.inner_steps:
        raise ConfigError(f"learner.truncate_steps must be in 1..inner_steps-1 = {L.inner_steps - 1}, got "
                          f"{L.truncate_steps} (truncating none is hypergradient unrolled)")
    if L.hypergradient == "implicit" and (family.is_rl or L.learn_inner_lr or L.learn_step_scale
                                          or L.step_loss_weights or L.step_loss != "last"):
        raise ConfigError("learner.hypergradient implicit needs a supervised family, a fixed inner step size "
                          "and the outer loss after the last step (learn_inner_lr, learn_step_scale, "
                          "step_loss_weights and step_loss mean are unrolled options)")
    if L.augmentation == "learned" and L.hypergradient == "implicit":
        raise ConfigError("learner.augmentation learned needs learner.hypergradient unrolled or truncated")
    if O.optimizer == "trpo" and O.hvp == "gauss_newton" and (L.inner_steps > 1 or L.learn_inner_lr
                                                              or L.learn_step_scale):
        raise ConfigError("outer.hvp gauss_newton needs one inner step with a fixed step size; use autograd")


def build(cfg, objective, model, init: Params, executor: TaskExecutor) -> MAML:
    L = cfg.learner
    return MAML(objective, init, inner_lr=L.inner_lr, inner_steps=L.inner_steps, first_order=L.first_order,
                learn_inner_lr=L.learn_inner_lr, inner_lr_per_step=L.inner_lr_per_step,
                learn_step_scale=L.learn_step_scale, step_lr_scales=L.step_lr_scales,
                step_loss_weights=step_loss_weights(cfg), hypergradient=L.hypergradient,
                truncate_steps=L.truncate_steps, implicit_lambda=L.implicit_lambda,
                implicit_cg_steps=L.implicit_cg_steps, augmentation=L.augmentation,
                augment_magnitudes=L.augment_magnitudes, executor=executor)


SPEC = Algorithm(
    name="maml", title="MAML", build=build, check=check, kl_curvature=True,
    summary="MAML, second order (first_order: FOMAML; learn_inner_lr: Meta-SGD; hypergradient truncated / "
            "implicit: iMAML)",
    reads=tuple(f"learner.{k}" for k in (
        "inner_steps", "inner_lr", "first_order", "hypergradient", "truncate_steps", "implicit_lambda",
        "implicit_cg_steps", "augmentation", "augment_magnitudes", "learn_inner_lr", "inner_lr_per_step",
        "learn_step_scale", "step_lr_scales", "step_loss", "step_loss_weights", "estimator"))
    + ("train.recompute_inner_steps",))
