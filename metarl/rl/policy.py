"""Gaussian MLP policy, used through `functional_call` so each task can carry its own parameters."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from metarl.models import make_activation, reinit_
from metarl.params import Params


class GaussianMLPPolicy(nn.Module):
    """pi(a | s) = N(mean_mlp(s), diag(exp(log_std))^2): a state-independent, learned log standard deviation.

    The MAML paper's policy: 2 hidden layers of 100 ReLU units. The module's own weights are only initial
    values; the learners pass parameter dicts through `functional_call`.

    `action_scale` s: the Gaussian is parametrised in units of s, i.e. the emitted action is s * a' with
    a' ~ N(mlp(s), exp(log_std)^2) (mean and std both scaled; `init_std` is in those units). rllab's `normalize`
    env wrapper, which the MAML paper's code used, does this with s = the action bound (0.1 for 2D navigation:
    a' in [-1, 1]). It changes no distribution the policy can express, but it changes the geometry of a gradient
    step: the log-likelihood's gradient in the output layer is 1/s times larger in the unscaled units, so one
    step size (inner lr, TRPO's KL metric aside) moves the output layer s^2 times less relative to the hidden layers.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (100, 100), activation: str = "relu",
                 init_std: float = 1.0, generator: torch.Generator | None = None, last_layer_scale: float = 1.0,
                 action_scale: float = 1.0):
        super().__init__()
        if not init_std > 0:
            raise ValueError(f"init_std must be positive, got {init_std}")
        if not action_scale > 0:
            raise ValueError(f"action_scale must be positive, got {action_scale}")
        self.action_scale = float(action_scale)
        self._log_action_scale = math.log(self.action_scale)
        layers: list[nn.Module] = []
        dims = [obs_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), make_activation(activation)]
        layers.append(nn.Linear(dims[-1], act_dim))
        self.mean = nn.Sequential(*layers)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))
        self.obs_dim, self.act_dim = obs_dim, act_dim
        if generator is not None:
            reinit_(self, generator)
        if last_layer_scale != 1.0:  # a near-zero initial mean: the first policy stays put instead of drifting
            with torch.no_grad():
                self.mean[-1].weight.mul_(last_layer_scale)
                self.mean[-1].bias.mul_(last_layer_scale)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) of the emitted action, each shaped like obs[..., :act_dim]."""
        return self._scaled(self.mean(obs), self.log_std)

    def _scaled(self, mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.action_scale == 1.0:
            return mean, log_std.expand_as(mean)
        return mean * self.action_scale, (log_std + self._log_action_scale).expand_as(mean)

    def apply_params(self, params: Params, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """forward() as a pure function of a parameter dict: what functional_call computes, without its
        per-call module bookkeeping (it dominates a rollout step on CPU)."""
        h = obs
        n = len(self.mean)
        for i in range(0, n, 2):
            h = torch.nn.functional.linear(h, params[f"mean.{i}.weight"], params[f"mean.{i}.bias"])
            if i + 1 < n:
                h = self.mean[i + 1](h)
        return self._scaled(h, params["log_std"])


def policy_outputs(policy: nn.Module, params: Params, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, log_std) of ONE parameter set on obs of any leading shape."""
    if isinstance(policy, GaussianMLPPolicy):
        return policy.apply_params(params, obs)
    return functional_call(policy, params, (obs,))


def batched_policy_outputs(policy: nn.Module, params: Params, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task parameters (leading dim T) on per-task observations (T, ...): one vmapped call."""
    return vmap(lambda p, o: policy_outputs(policy, p, o))(params, obs)


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log N(actions; mean, exp(log_std)^2), summed over the action dimension."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the action dimension."""
    var_p, var_q = torch.exp(2 * log_std_p), torch.exp(2 * log_std_q)
    kl = log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5
    return kl.sum(-1)
