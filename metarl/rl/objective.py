"""The policy-gradient objective of ONE task, for every learner and policy (metarl.algorithms.base.Objective).

Task data is a dict of tensors with leading dims (E, L): obs, actions, mask, advantages (and a recurrent
policy's inputs); the query data of the outer loss also carries the sampling ("old") policy on it:
old_log_probs, and for a feed-forward policy its outputs old_mean, old_log_std.

    inner_loss  = policy-gradient estimator (reinforce / dice / lvc) of the support data   (metarl.rl.estimators)
    outer_loss  = clipped_surrogate: -mean(ratio * A) (TRPO's surrogate; ratio = pi / pi_old), or with clip > 0
                  -mean(min(ratio A, clip(ratio, 1 - clip, 1 + clip) A)) (PPO's; MAML-PPO and RL² alike)
    metrics     = kl = mean KL(pi_old || pi) (exact for the Gaussians when old_mean is given, else Schulman's
                  k3 estimate from the old log-probs), the trust-region constraint; max |ratio - 1|
    evaluation  = the average undiscounted return of the task's episodes (they were collected with the params)
"""
from __future__ import annotations

import torch

from metarl.nets import Params
from metarl.nets.policies import gaussian_kl, gaussian_log_prob
from metarl.rl.estimators import get_estimator

Data = dict[str, torch.Tensor]
Metrics = dict[str, torch.Tensor]


def clipped_surrogate(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                      mask: torch.Tensor, clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, ratio, log ratio): -mean over valid steps of ratio * A, clipped as PPO's when clip > 0."""
    log_ratio = log_probs - old_log_probs
    ratio = torch.exp(log_ratio)
    gain = ratio * advantages
    if clip > 0:
        gain = torch.minimum(gain, ratio.clamp(1 - clip, 1 + clip) * advantages)
    return -(gain * mask).sum() / mask.sum().clamp_min(1), ratio, log_ratio


class PolicyGradientObjective:
    """Policy-gradient losses of one task for a Gaussian policy (metarl.nets.policies, feed-forward or recurrent).
    `clip` is the outer step's (PPO: its clipping range; 0: the unclipped surrogate of TRPO and plain gradients)."""

    def __init__(self, policy, estimator: str = "reinforce", clip: float = 0.0):
        if not clip >= 0:
            raise ValueError(f"clip must be >= 0 (0 = unclipped surrogate), got {clip}")
        self.policy, self.estimator_name, self.clip = policy, estimator, float(clip)
        self.estimator = get_estimator(estimator)

    def log_probs(self, params: Params, data: Data) -> torch.Tensor:
        return gaussian_log_prob(*self.policy.outputs(params, data), data["actions"])

    def inner_loss(self, params: Params, data: Data) -> torch.Tensor:
        return self.estimator(self.log_probs(params, data), data["advantages"], data["mask"])

    def outer_loss(self, params: Params, data: Data) -> tuple[torch.Tensor, Metrics]:
        mean, log_std = self.policy.outputs(params, data)
        mask = data["mask"]
        loss, ratio, log_ratio = clipped_surrogate(gaussian_log_prob(mean, log_std, data["actions"]),
                                                   data["old_log_probs"], data["advantages"], mask, self.clip)
        if "old_mean" in data:
            kl = gaussian_kl(data["old_mean"], data["old_log_std"], mean, log_std)
        else:  # KL(old || new) from the old policy's samples (k3: unbiased, >= 0)
            kl = (ratio - 1) - log_ratio
        return loss, {"kl": (kl * mask).sum() / mask.sum().clamp_min(1), "ratio_dev": ((ratio - 1).abs() * mask).amax()}

    def metrics(self, params: Params, data: Data) -> Metrics:
        return {"return": data["rewards"].sum(-1).mean()}
