"""RL² (Duan et al. 2016): the learner is a recurrent policy; adapting to a task is its hidden state reading the
trial so far, so there is no inner gradient step. The meta-parameters are the GRU policy's weights, trained
with PPO on whole trials (metarl.rl.trials):

    loss(theta) = -mean over valid steps of min(ratio_t A_t, clip(ratio_t, 1 - eps, 1 + eps) A_t),
                  ratio_t = pi_theta(a_t | x_1..x_t) / pi_old(a_t | x_1..x_t)
    with the recurrence re-run over each trial's kept inputs (h_0 = 0), all trials of all tasks in one batch.

The outer step is the trainer's PPO (outer.optimizer ppo: Adam epochs on this loss); evaluation scores the
return of episode s of fresh trials as "after s steps" (in-context adaptation).
"""
from __future__ import annotations

from typing import Any

import torch

from metarl.learners.base import Learner, as_steps, at
from metarl.params import MetaParams, Metrics, Params
from metarl.rl.policy import gaussian_log_prob
from metarl.rl.recurrent import GRUGaussianPolicy


class RecurrentObjective:
    """PPO's clipped surrogate of trials for the recurrent policy (the objective interface's outer loss)."""

    def __init__(self, policy: GRUGaussianPolicy, clip: float = 0.2):
        if not clip >= 0:
            raise ValueError(f"clip must be >= 0, got {clip}")
        self.policy, self.clip = policy, float(clip)

    def log_probs(self, params: Params, data: dict[str, torch.Tensor]) -> torch.Tensor:
        mean, log_std = self.policy.unroll(params, data["inputs"], data["mask"])
        return gaussian_log_prob(mean, log_std, data["actions"])

    def outer_loss(self, params: Params, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Metrics]:
        logp = self.log_probs(params, data)
        mask, adv = data["mask"], data["advantages"]
        n = mask.sum().clamp_min(1)
        log_ratio = logp - data["old_log_probs"]
        ratio = torch.exp(log_ratio)
        gain = ratio * adv
        if self.clip > 0:
            gain = torch.minimum(gain, ratio.clamp(1 - self.clip, 1 + self.clip) * adv)
        loss = -(gain * mask).sum() / n
        # KL(old || new) estimated on the old policy's samples (Schulman's k3: unbiased, >= 0)
        kl = (((ratio - 1) - log_ratio) * mask).sum() / n
        return loss, {"kl": kl.detach(), "ratio_dev": ((ratio - 1).abs() * mask).amax().detach()}

    def inner_loss(self, params: Params, data: Any) -> torch.Tensor:
        raise NotImplementedError("RL² takes no inner gradient step: it adapts in its hidden state")

    def metrics(self, params: Params, data: Any) -> Metrics:
        return {"return": data["rewards"].sum(-1).mean()}


class RL2(Learner):
    needs_query = False

    def __init__(self, objective: RecurrentObjective, init_params: Params):
        self.objective = objective
        self.inner_steps, self.step_loss_weights = 0, ()
        self._init = {k: v.detach().clone() for k, v in init_params.items()}

    def init_meta_params(self) -> MetaParams:
        return {"theta": {k: v.clone() for k, v in self._init.items()}}

    def start(self, meta: MetaParams) -> Params:
        return meta["theta"]

    def step(self, meta: MetaParams, state: Any, data: Any, s: int) -> Any:
        raise NotImplementedError("RL² adapts in its hidden state (metarl.rl.trials), not by inner steps")

    def meta_loss(self, meta: MetaParams, support: Any, query: Any) -> tuple[torch.Tensor, Metrics]:
        """PPO's loss on the trials of every task at once (they share theta: one batch, no per-task map)."""
        return self.objective.outer_loss(meta["theta"], at(as_steps(support), 0))

    def meta_gradient(self, meta: MetaParams, support: Any, query: Any):
        theta = {k: v.detach().requires_grad_() for k, v in meta["theta"].items()}
        with torch.enable_grad():
            loss, metrics = self.meta_loss({"theta": theta}, support, query)
            grads = torch.autograd.grad(loss, list(theta.values()))
        return {"theta": dict(zip(theta, grads))}, loss.detach(), metrics
