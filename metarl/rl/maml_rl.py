"""MAML for RL (Finn et al. 2017, section 5.3) with a TRPO or PPO outer step, and its first-order variant.

One iteration, for a batch of T tasks and k = inner_steps:

    D_0     = collect(theta)                          E episodes per task with the meta-policy
    phi_s   = phi_{s-1} - alpha * grad L_inner(phi_{s-1}, D_{s-1})    per task (vmapped), no graph kept
    D_s     = collect(phi_s)                          s = 1..k: each step's policy collects the next data
    old_s   = pi_{phi_s} on D_s                       (detached: the sampling distribution)
    L(theta) = mean_i sum_s w_s outer_loss(phi_{i,s}(theta), D_{i,s})   phi re-adapted WITH the graph
    theta  <- TRPO(L, KL = the same weighted sum of the KLs)  or  a few Adam epochs on the clipped PPO surrogate

This is the evaluation protocol (each step collects fresh episodes with the current adapted policy and takes
one more step from them) trained end to end, so the steps after the first are meta-learned too. The weights
w_s default to the last step only (the MAML paper: k = 1). The inner-loss gradient of the data D_{s-1} is
taken at phi_{s-1}(theta) (with the graph), but D_{s-1}'s dependence on theta through sampling is not
differentiated (as in the paper's code). `first_order=True` detaches the inner gradients (FOMAML).

The data of one step is a dict of tensors with leading dim T (see `RLObjective`); for k > 1 the supports are
the list [D_0 .. D_{k-1}] and the queries [D_1 .. D_k] (k = 1 also takes single dicts).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.func import grad, jvp, vmap

from metarl.rl.objective import RLObjective
from metarl.rl.policy import Params, batched_policy_outputs, expand_params, gaussian_log_prob
from metarl.rl.trpo import TRPOSettings, trpo_step

Data = dict[str, torch.Tensor]
Steps = list[Data]
#: collect(per-task params) -> (processed data with leading dim T, mean undiscounted episode return)
Collect = Callable[[Params], tuple[Data, float]]


#: Meta-SGD: the learned log step size of policy parameter k is the meta-parameter LOG_LR_PREFIX + k
LOG_LR_PREFIX = "log_inner_lr."
#: a step size: one float, or one tensor per policy parameter (same shape, shared by all tasks)
StepSize = float | Params


def _lr(lr: StepSize, k: str):
    return lr if isinstance(lr, float) else lr[k]


def adapt_per_task(objective: RLObjective, params: Params, data: Data, lr: StepSize) -> Params:
    """One inner step from per-task parameters (leading dim T) on per-task data, without the graph."""

    def one(p: Params, d: Data) -> Params:
        g = grad(objective.inner_loss)(p, d)
        return {k: p[k] - _lr(lr, k) * g[k] for k in p}

    with torch.no_grad():
        return {k: v.detach() for k, v in vmap(one)({k: v.detach() for k, v in params.items()}, data).items()}


def _as_steps(data: Data | Steps) -> Steps:
    return list(data) if isinstance(data, (list, tuple)) else [data]


def _take(data: Data | Steps, idx: torch.Tensor) -> Data | Steps:
    """The tasks `idx` of one step's data or of every step's."""
    if isinstance(data, (list, tuple)):
        return [{k: v[idx] for k, v in d.items()} for d in data]
    return {k: v[idx] for k, v in data.items()}


class MAMLRL:
    """MAML-RL: adaptation by `inner_steps` policy-gradient steps, outer step by TRPO ("trpo") or PPO ("ppo").

    `step_loss_weights` (one per inner step, non-negative, normalised to sum 1; default: the last step only)
    weight the surrogate and the KL of the policies after 1..inner_steps steps.

    `step_lr_scales` multiply the step size of inner steps 1, 2, ... (the last one repeats for further steps, in
    training and in evaluation; empty = 1 for every step).

    `learn_inner_lr` (Meta-SGD, Li et al. 2017): one learned step size per policy parameter entry, stored in
    log space as extra meta-parameters LOG_LR_PREFIX + name (initial value inner_lr) beside the policy's, and
    updated by the same outer step (TRPO's KL covers them: they move the adapted policies).
    """

    def __init__(self, policy: nn.Module, init_params: Params, inner_lr: float = 0.1, first_order: bool = False,
                 estimator: str = "reinforce", outer: str = "trpo", trpo: TRPOSettings = TRPOSettings(),
                 ppo_clip: float = 0.2, ppo_epochs: int = 5, ppo_lr: float = 3e-4, inner_steps: int = 1,
                 step_loss_weights: tuple[float, ...] = (), learn_inner_lr: bool = False,
                 step_lr_scales: tuple[float, ...] = ()):
        if outer not in ("trpo", "ppo"):
            raise ValueError(f"unknown outer step {outer!r}: expected 'trpo' or 'ppo'")
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be at least 1, got {inner_steps}")
        if not inner_lr > 0:
            raise ValueError(f"inner_lr must be positive, got {inner_lr}")
        if step_loss_weights:
            w = [float(x) for x in step_loss_weights]
            if len(w) != inner_steps or min(w) < 0 or sum(w) <= 0:
                raise ValueError(f"step_loss_weights needs {inner_steps} non-negative weights with a positive sum, "
                                 f"got {list(step_loss_weights)}")
        else:
            w = [0.0] * (inner_steps - 1) + [1.0]
        if trpo.hvp == "gauss_newton" and (inner_steps > 1 or learn_inner_lr):
            raise ValueError("the Gauss-Newton KL Hessian-vector product supports inner_steps = 1 and a fixed "
                             "inner_lr only")
        self.policy = policy
        self.outer = outer
        self.objective = RLObjective(policy, estimator, clip=ppo_clip if outer == "ppo" else 0.0)
        self._init = {k: v.detach().clone() for k, v in init_params.items()}
        self.learn_inner_lr = bool(learn_inner_lr)
        if any(not x > 0 for x in step_lr_scales):
            raise ValueError(f"step_lr_scales must be positive, got {list(step_lr_scales)}")
        self.step_lr_scales = tuple(float(x) for x in step_lr_scales)
        if self.learn_inner_lr:
            self._init.update({LOG_LR_PREFIX + k: torch.full_like(v, math.log(inner_lr)) for k, v in init_params.items()})
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.first_order = bool(first_order)
        self.step_loss_weights = tuple(x / sum(w) for x in w)
        self.trpo = trpo
        self.ppo_epochs, self.ppo_lr = int(ppo_epochs), float(ppo_lr)
        self._adam_state: dict[str, torch.Tensor] = {}

    def init_params(self) -> Params:
        """The meta-parameters: the policy's initial parameters (and the log step sizes, if learned)."""
        return {k: v.clone() for k, v in self._init.items()}

    def adaptation(self, meta: Params) -> tuple[Params, StepSize]:
        """(policy parameters, step size) of the meta-parameters: what an inner step starts from and uses."""
        if not self.learn_inner_lr:
            return meta, self.inner_lr
        policy = {k: v for k, v in meta.items() if not k.startswith(LOG_LR_PREFIX)}
        return policy, {k: meta[LOG_LR_PREFIX + k].exp() for k in policy}

    def step_size(self, lr: StepSize, step: int) -> StepSize:
        """The step size of inner step `step` (0-based) from adaptation()'s: times step_lr_scales[step]."""
        if not self.step_lr_scales:
            return lr
        scale = self.step_lr_scales[min(step, len(self.step_lr_scales) - 1)]
        return lr * scale if isinstance(lr, float) else {k: v * scale for k, v in lr.items()}

    def _check_steps(self, support: Steps, query: Steps) -> None:
        if len(support) != self.inner_steps or len(query) != self.inner_steps:
            raise ValueError(f"{self.inner_steps} inner steps need {self.inner_steps} supports and queries, got "
                             f"{len(support)} and {len(query)}")

    def _task_path(self, theta: Params, support: Steps) -> list[Params]:
        """ONE task's params after 1..k steps, step s on support[s - 1], with the graph (unless first order)."""
        params, lr = self.adaptation(theta)
        path = []
        for step, d in enumerate(support):
            g = grad(self.objective.inner_loss)(params, d)
            if self.first_order:
                g = {k: v.detach() for k, v in g.items()}
            lr_s = self.step_size(lr, step)
            params = {k: params[k] - _lr(lr_s, k) * g[k] for k in params}
            path.append(params)
        return path

    def adapt_path(self, theta: Params, support: Data | Steps) -> list[Params]:
        """Per-task params (leading dim T) after 1..k steps, without the graph."""
        support = _as_steps(support)
        with torch.no_grad():
            theta = {k: v.detach() for k, v in theta.items()}
            path = vmap(lambda s: self._task_path(theta, s))(support)
        return [{k: v.detach() for k, v in p.items()} for p in path]

    def with_old_policy(self, theta: Params, support: Data | Steps, query: Data | Steps) -> Data | Steps:
        """The query data plus the adapted policies' distributions on it, computed once, before any update."""
        single = not isinstance(query, (list, tuple))
        support, query = _as_steps(support), _as_steps(query)
        self._check_steps(support, query)
        out = []
        with torch.no_grad():
            for phi, q in zip(self.adapt_path(theta, support), query):
                mean, log_std = batched_policy_outputs(self.policy, phi, q["obs"])
                logp = gaussian_log_prob(mean, log_std, q["actions"])
                out.append({**q, "old_mean": mean, "old_log_std": log_std, "old_log_probs": logp})
        return out[0] if single else out

    def _task_loss(self, theta: Params, support: Steps, query: Steps) -> tuple[torch.Tensor, dict]:
        loss, kl, ratio_dev = 0.0, 0.0, 0.0
        for w, phi, q in zip(self.step_loss_weights, self._task_path(theta, support), query):
            if w > 0:
                step_loss, m = self.objective.outer_loss(phi, q)
                loss, kl = loss + w * step_loss, kl + w * m["kl"]
                ratio_dev = m["ratio_dev"] if isinstance(ratio_dev, float) else torch.maximum(ratio_dev, m["ratio_dev"])
        return loss, {"kl": kl, "ratio_dev": ratio_dev}

    def loss_and_kl(self, theta: Params, support: Data | Steps, query: Data | Steps) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Mean over tasks of the weighted surrogate and KL of the adapted policies (query: with_old_policy's)."""
        support, query = _as_steps(support), _as_steps(query)
        self._check_steps(support, query)
        losses, metrics = vmap(lambda s, q: self._task_loss(theta, s, q))(support, query)
        metrics = {"kl": metrics["kl"].mean(), "ratio_dev": metrics["ratio_dev"].amax()}
        return losses.mean(), metrics["kl"], metrics

    def outer_step(self, theta: Params, support: Data | Steps, query: Data | Steps) -> tuple[Params, dict[str, float]]:
        query = self.with_old_policy(theta, support, query)
        if self.outer == "trpo":
            kl_for_hvp = None
            num_tasks = _as_steps(support)[0]["obs"].shape[0]
            n_sub = max(1, round(self.trpo.hvp_task_fraction * num_tasks))
            if n_sub < num_tasks:  # an evenly spaced subset of the tasks, fixed: no randomness needed
                idx = torch.linspace(0, num_tasks - 1, n_sub).round().long()
                sub_s, sub_q = _take(support, idx), _take(query, idx)
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
        if self.inner_steps != 1 or self.learn_inner_lr:
            raise ValueError("the Gauss-Newton KL Hessian-vector product supports inner_steps = 1 and a fixed "
                             "inner_lr only")
        support, query = _as_steps(support)[0], _as_steps(query)[0]
        theta = {k: t.detach() for k, t in theta.items()}
        lr, first_order = self.step_size(self.inner_lr, 0), self.first_order
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
        policy_params, lr = self.adaptation(theta)
        data, ret = collect(policy_params)  # shared params: one plain policy call per step
        datas, returns = [data], [ret]
        phi = expand_params(policy_params, num_tasks)
        for step in range(self.inner_steps):
            phi = adapt_per_task(self.objective, phi, data, self.step_size(lr, step))
            data, ret = collect(phi)
            datas.append(data)
            returns.append(ret)
        theta, info = self.outer_step(theta, datas[:-1], datas[1:])
        steps = {f"return_step{s}": r for s, r in enumerate(returns[1:-1], start=1)}
        return theta, {"return_pre": returns[0], **steps, "return_post": returns[-1], **info}

    def state_dict(self) -> dict:
        return {"adam": self._adam_state}

    def load_state_dict(self, state: dict) -> None:
        self._adam_state = state.get("adam", {})
