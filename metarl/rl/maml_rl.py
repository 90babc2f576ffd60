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
from torch.func import grad, vmap

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
            return trpo_step(theta, lambda th: self.loss_and_kl(th, support, query), self.trpo)
        return self._ppo(theta, support, query)

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
        support, ret_pre = collect(expand_params(theta, num_tasks))
        phi = adapt_per_task(self.objective, expand_params(theta, num_tasks), support, self.inner_lr)
        query, ret_post = collect(phi)
        theta, info = self.outer_step(theta, support, query)
        return theta, {"return_pre": ret_pre, "return_post": ret_post, **info}

    def state_dict(self) -> dict:
        return {"adam": self._adam_state}

    def load_state_dict(self, state: dict) -> None:
        self._adam_state = state.get("adam", {})
