"""The RL objective of ONE task, on the `metarl.learners.base.Objective` interface (inner_loss / outer_loss).

Task data is a dict of tensors with leading dims (E, H): obs, actions, mask, advantages; the query data of
the outer loss also carries the pre-update ("old") adapted policy on it: old_log_probs, old_mean, old_log_std.

    inner_loss  = policy-gradient estimator (reinforce / dice / lvc) of the support data
    outer_loss  = -mean(ratio * A)                     (TRPO surrogate; ratio = pi / pi_old)
               or -mean(min(ratio A, clip(ratio) A))    (PPO, when clip > 0)
    metrics     = kl = mean KL(pi_old || pi), the trust-region constraint; max |ratio - 1|
    evaluation  = the average undiscounted return of the task's episodes (they were collected with the params)
"""
from __future__ import annotations

import torch
from torch import nn

from metarl.params import Metrics, Params
from metarl.rl.estimators import get_estimator
from metarl.rl.policy import gaussian_kl, gaussian_log_prob, policy_outputs

Data = dict[str, torch.Tensor]


class RLObjective:
    """Policy-gradient losses of one task for the Gaussian policy `policy` (used through functional_call)."""

    def __init__(self, policy: nn.Module, estimator: str = "reinforce", clip: float = 0.0):
        self.policy = policy
        self.estimator_name = estimator
        self.estimator = get_estimator(estimator)
        if clip < 0:
            raise ValueError(f"clip must be >= 0 (0 = unclipped surrogate), got {clip}")
        self.clip = float(clip)

    def log_probs(self, params: Params, data: Data) -> torch.Tensor:
        mean, log_std = policy_outputs(self.policy, params, data["obs"])
        return gaussian_log_prob(mean, log_std, data["actions"])

    def inner_loss(self, params: Params, data: Data) -> torch.Tensor:
        return self.estimator(self.log_probs(params, data), data["advantages"], data["mask"])

    def outer_loss(self, params: Params, data: Data) -> tuple[torch.Tensor, Metrics]:
        mean, log_std = policy_outputs(self.policy, params, data["obs"])
        logp = gaussian_log_prob(mean, log_std, data["actions"])
        mask, adv = data["mask"], data["advantages"]
        n = mask.sum().clamp_min(1)
        ratio = torch.exp(logp - data["old_log_probs"])
        if self.clip > 0:
            clipped = ratio.clamp(1 - self.clip, 1 + self.clip)
            gain = torch.minimum(ratio * adv, clipped * adv)
        else:
            gain = ratio * adv
        loss = -(gain * mask).sum() / n
        kl = (gaussian_kl(data["old_mean"], data["old_log_std"], mean, log_std) * mask).sum() / n
        return loss, {"kl": kl, "ratio_dev": ((ratio - 1).abs() * mask).amax()}

    def metrics(self, params: Params, data: Data) -> Metrics:
        return {"return": data["rewards"].sum(-1).mean()}
