"""MAML for RL (Finn et al. 2017, section 5.3) with a TRPO or PPO outer step, and its first-order variant.

One iteration, for a batch of T tasks:

    support = collect(theta)                          E episodes per task with the meta-policy
    phi     = theta - alpha * grad L_inner(theta, support)     per task (vmapped), cheap: no graph kept
    query   = collect(phi)                            E episodes per task with the adapted policies
    old     = pi_phi on the query data                (detached: the sampling distribution)
    L(theta) = mean_i outer_loss(phi_i(theta), query_i)    phi re-adapted WITH the graph (second order)
    theta  <- TRPO(L, KL)  or  a few Adam epochs on the clipped PPO surrogate

The inner step is `metarl.learners.maml.MAML` over `RLObjective`; `first_order=True` detaches the inner
gradient (FOMAML).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import grad, jvp, vmap

from metarl.learners.maml import MAML
from metarl.rl.objective import RLObjective
from metarl.rl.policy import Params, batched_policy_outputs, expand_params, gaussian_log_prob
from metarl.rl.trpo import TRPOSettings, trpo_step

Data = dict[str, torch.Tensor]
#: collect(per-task params) -> (processed data with leading dim T, mean undiscounted episode return)
Collect = Callable[[Params], tuple[Data, float]]


def adapt_per_task(objective: RLObjective, params: Params, data: Data, lr: float) -> Params:
    """One inner step from per-task parameters (leading dim T) on per-task data, without the graph."""

    def one(p: Params, d: Data) -> Params:
        g = grad(objective.inner_loss)(p, d)
        return {k: p[k] - lr * g[k] for k in p}

    with torch.no_grad():
        return {k: v.detach() for k, v in vmap(one)({k: v.detach() for k, v in params.items()}, data).items()}


class MAMLRL:
    """MAML-RL: adaptation by `inner_steps` policy-gradient steps, outer step by TRPO ("trpo") or PPO ("ppo")."""

    def __init__(self, policy: nn.Module, init_params: Params, inner_lr: float = 0.1, first_order: bool = False,
                 estimator: str = "reinforce", outer: str = "trpo", trpo: TRPOSettings = TRPOSettings(),
                 ppo_clip: float = 0.2, ppo_epochs: int = 5, ppo_lr: float = 3e-4):
        if outer not in ("trpo", "ppo"):
            raise ValueError(f"unknown outer step {outer!r}: expected 'trpo' or 'ppo'")
        self.policy = policy
        self.outer = outer
        self.objective = RLObjective(policy, estimator, clip=ppo_clip if outer == "ppo" else 0.0)
        self.learner = MAML(self.objective, init_params, inner_lr=inner_lr, inner_steps=1, first_order=first_order)
        self.inner_lr = float(inner_lr)
        self.trpo = trpo
        self.ppo_epochs, self.ppo_lr = int(ppo_epochs), float(ppo_lr)
        self._adam_state: dict[str, torch.Tensor] = {}

    def init_params(self) -> Params:
        return self.learner.init_meta_params()["theta"]

    def with_old_policy(self, theta: Params, support: Data, query: Data) -> Data:
        """The query data plus the adapted policy's distribution on it, computed once, before any update."""
        with torch.no_grad():
            phi = self.learner.adapt({"theta": {k: v.detach() for k, v in theta.items()}}, support)
            mean, log_std = batched_policy_outputs(self.policy, phi, query["obs"])
            logp = gaussian_log_prob(mean, log_std, query["actions"])
        return {**query, "old_mean": mean, "old_log_std": log_std, "old_log_probs": logp}

    def loss_and_kl(self, theta: Params, support: Data, query: Data) -> tuple[torch.Tensor, torch.Tensor, dict]:
        loss, metrics = self.learner.meta_loss({"theta": theta}, support, query)
        return loss, metrics["kl"], metrics

    def outer_step(self, theta: Params, support: Data, query: Data) -> tuple[Params, dict[str, float]]:
        query = self.with_old_policy(theta, support, query)
        if self.outer == "trpo":
            kl_for_hvp = None
            num_tasks = support["obs"].shape[0]
            n_sub = max(1, round(self.trpo.hvp_task_fraction * num_tasks))
            if n_sub < num_tasks:  # an evenly spaced subset of the tasks, fixed: no randomness needed
                idx = torch.linspace(0, num_tasks - 1, n_sub).round().long()
                sub_s = {k: v[idx] for k, v in support.items()}
                sub_q = {k: v[idx] for k, v in query.items()}
                kl_for_hvp = lambda th: self.loss_and_kl(th, sub_s, sub_q)[1]  # noqa: E731
            hvp = None
            if self.trpo.hvp == "gauss_newton":
                sub_s, sub_q = (sub_s, sub_q) if kl_for_hvp is not None else (support, query)
                hvp = lambda v: self.kl_hvp_gauss_newton(theta, sub_s, sub_q, v)  # noqa: E731
            return trpo_step(theta, lambda th: self.loss_and_kl(th, support, query), self.trpo, kl_for_hvp, hvp)
        return self._ppo(theta, support, query)

    def kl_hvp_gauss_newton(self, theta: Params, support: Data, query: Data, v: Params) -> Params:
        """H v for H the Hessian of the mean KL(pi_old || pi_phi(theta)) at the params where pi_old = pi_phi.

        There KL's gradient in phi vanishes, so H = mean_i J_i^T F_i J_i exactly, with J_i = d phi_i / d theta =
        I - alpha H_inner,i (I for first order) and F_i the KL Hessian in phi: two inner Hessian-vector
        products and one outer one per task, all by forward-over-reverse, instead of a third-order backward.
        """
        theta = {k: t.detach() for k, t in theta.items()}
        lr, first_order = self.inner_lr, self.learner.first_order
        objective = self.objective

        def one(s: Data, q: Data) -> Params:
            inner_grad = lambda p: grad(objective.inner_loss)(p, s)  # noqa: E731
            g, Hin_v = jvp(inner_grad, (theta,), (v,))
            phi = {k: theta[k] - lr * g[k] for k in theta}
            Jv = v if first_order else {k: v[k] - lr * Hin_v[k] for k in v}
            kl = lambda p: objective.outer_loss(p, q)[1]["kl"]  # noqa: E731
            _, FJv = jvp(grad(kl), (phi,), (Jv,))
            if first_order:
                return FJv
            _, Hin_FJv = jvp(inner_grad, (theta,), (FJv,))
            return {k: FJv[k] - lr * Hin_FJv[k] for k in FJv}

        return {k: t.mean(0) for k, t in vmap(one)(support, query).items()}

    def _ppo(self, theta: Params, support: Data, query: Data) -> tuple[Params, dict[str, float]]:
        """`ppo_epochs` full-batch Adam steps on the clipped surrogate through the adaptation."""
        th = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
        opt = torch.optim.Adam(list(th.values()), lr=self.ppo_lr)
        if self._adam_state:
            opt.load_state_dict(self._adam_state)
        info: dict[str, float] = {}
        for epoch in range(self.ppo_epochs):
            loss, kl, _ = self.loss_and_kl(th, support, query)
            if epoch == 0:
                info["loss_before"] = float(loss.detach())
            opt.zero_grad()
            loss.backward()
            opt.step()
        self._adam_state = opt.state_dict()
        info.update(loss_after=float(loss.detach()), kl=float(kl.detach()))
        return {k: v.detach() for k, v in th.items()}, info

    def iteration(self, theta: Params, num_tasks: int, collect: Collect) -> tuple[Params, dict[str, float]]:
        support, ret_pre = collect(theta)  # shared params: one plain policy call per step
        phi = adapt_per_task(self.objective, expand_params(theta, num_tasks), support, self.inner_lr)
        query, ret_post = collect(phi)
        theta, info = self.outer_step(theta, support, query)
        return theta, {"return_pre": ret_pre, "return_post": ret_post, **info}

    def state_dict(self) -> dict:
        return {"adam": self._adam_state}

    def load_state_dict(self, state: dict) -> None:
        self._adam_state = state.get("adam", {})
