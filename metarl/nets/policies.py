"""Gaussian policies as pure functions of their parameters, so each task can carry its own.

    GaussianMLPPolicy   pi(a | s): the MAML paper's MLP policy          call(params, obs)
    GRUGaussianPolicy   pi(a | history): RL²'s recurrent policy         act(params, obs, memory), one step

Both offer `outputs(params, data)`: the (mean, log_std) of every step of collected data, what the losses
re-evaluate. The sampler (metarl.rl.sampler) and Meta-World's evaluation agent step them the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.func import vmap

from metarl.nets import Params, make_activation, reinit_


class GaussianMLPPolicy(nn.Module):
    """pi(a | s) = N(mean_mlp(s), diag(exp(log_std))^2): a state-independent, learned log standard deviation.

    The MAML paper's policy: 2 hidden layers of 100 ReLU units. The module's own weights are only initial
    values; the learners pass parameter dicts to `call`.

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
        #: the output layer and the standard deviation (what ANIL adapts)
        self.head_names = (f"mean.{len(layers) - 1}.weight", f"mean.{len(layers) - 1}.bias", "log_std")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        if generator is not None:
            reinit_(self, generator)
        if last_layer_scale != 1.0:  # a near-zero initial mean: the first policy stays put instead of drifting
            with torch.no_grad():
                self.mean[-1].weight.mul_(last_layer_scale)
                self.mean[-1].bias.mul_(last_layer_scale)

    recurrent = False

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) of the emitted action, each shaped like obs[..., :act_dim]."""
        return self.call(dict(self.named_parameters()), obs)

    def _scaled(self, mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.action_scale == 1.0:
            return mean, log_std.expand_as(mean)
        return mean * self.action_scale, (log_std + self._log_action_scale).expand_as(mean)

    def call(self, params: Params, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) of ONE parameter set on obs of any leading shape."""
        h = obs
        n = len(self.mean)
        for i in range(0, n, 2):
            h = torch.nn.functional.linear(h, params[f"mean.{i}.weight"], params[f"mean.{i}.bias"])
            if i + 1 < n:
                h = self.mean[i + 1](h)
        return self._scaled(h, params["log_std"])


    def outputs(self, params: Params, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) at every step of collected data."""
        return self.call(params, data["obs"])


def batched_outputs(policy: GaussianMLPPolicy, params: Params, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task parameters (leading dim T) on per-task observations (T, ...): one vmapped call."""
    return vmap(policy.call)(params, obs)


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log N(actions; mean, exp(log_std)^2), summed over the action dimension."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the action dimension."""
    var_p, var_q = torch.exp(2 * log_std_p), torch.exp(2 * log_std_q)
    kl = log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5
    return kl.sum(-1)


@dataclass
class Memory:
    """What a recurrent policy carries from step to step of a trial, per sub-env: the GRU state h, the last
    action and reward taken while the episode ran, and whether the next step is an episode's first."""

    h: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    first: torch.Tensor

    def after_step(self, action: torch.Tensor, reward: torch.Tensor, running: torch.Tensor) -> "Memory":
        """The memory once `action` earned `reward` (kept only where the episode was still running)."""
        return Memory(self.h, torch.where(running.unsqueeze(-1), action, self.action),
                      torch.where(running, reward, self.reward), torch.zeros_like(self.first))

    def new_episode(self, mask: torch.Tensor | None = None) -> "Memory":
        """The next step is the first of an episode (in the sub-envs of `mask`; all when None); h carries on."""
        first = torch.ones_like(self.first) if mask is None else self.first | mask
        return Memory(self.h, self.action, self.reward, first)


class GRUGaussianPolicy(nn.Module):
    """RL²'s recurrent Gaussian policy (Duan et al. 2016): a GRU whose hidden state carries across the
    episodes of a trial, so that it can adapt to the task in context, without a gradient step.

        x_t = (obs_t, a_{t-1}, r_{t-1}, first_t)       a, r of the last step taken (zeros at the trial's start);
                                                       first_t = 1 on the first step of every episode
        h_t = GRU(x_t, h_{t-1})    on running steps;   h_t = h_{t-1} on steps after an episode ended early (masked)
        pi(a_t | history) = N(action_scale * W h_t + b, diag(action_scale * exp(log_std))^2)

    h_0 = 0 at the start of every trial. The inputs of every step are kept with the data, so the loss re-runs the
    same recurrence (`unroll`) that the sampler ran step by step (`step`).
    """

    recurrent = True

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 64, init_std: float = 1.0,
                 generator: torch.Generator | None = None, last_layer_scale: float = 1.0, action_scale: float = 1.0):
        super().__init__()
        if not init_std > 0:
            raise ValueError(f"init_std must be positive, got {init_std}")
        if not action_scale > 0:
            raise ValueError(f"action_scale must be positive, got {action_scale}")
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, int(hidden)
        self.input_dim = obs_dim + act_dim + 2
        self.action_scale = float(action_scale)
        self.gru = nn.GRUCell(self.input_dim, self.hidden)
        self.head = nn.Linear(self.hidden, act_dim)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))
        if generator is not None:
            reinit_(self, generator)
        if last_layer_scale != 1.0:
            with torch.no_grad():
                self.head.weight.mul_(last_layer_scale)
                self.head.bias.mul_(last_layer_scale)

    def initial_state(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(batch, self.hidden, device=like.device, dtype=like.dtype)

    def start(self, batch: int, like: torch.Tensor) -> Memory:
        """The memory of `batch` sub-envs at the start of a trial: nothing remembered."""
        return Memory(self.initial_state(batch, like), like.new_zeros(batch, self.act_dim), like.new_zeros(batch),
                      torch.ones(batch, dtype=torch.bool, device=like.device))

    def act(self, params: Params, obs: torch.Tensor, memory: Memory, running: torch.Tensor | None = None):
        """One step of every sub-env: (mean, log_std, memory with the new state, the inputs x_t)."""
        x = self.inputs(obs, memory.action, memory.reward, memory.first)
        mean, log_std, h = self.step(params, x, memory.h, running)
        return mean, log_std, Memory(h, memory.action, memory.reward, memory.first), x

    def outputs(self, params: Params, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) at every step of collected trials (their inputs kept in data["inputs"])."""
        return self.unroll(params, data["inputs"], data["mask"])

    def inputs(self, obs: torch.Tensor, prev_action: torch.Tensor, prev_reward: torch.Tensor,
               first: torch.Tensor) -> torch.Tensor:
        """x_t from its parts (any leading dims)."""
        return torch.cat([obs, prev_action, prev_reward.unsqueeze(-1), first.unsqueeze(-1).to(obs.dtype)], -1)

    def step(self, params: Params, x: torch.Tensor, h: torch.Tensor, running: torch.Tensor | None = None):
        """One step for a batch: (mean, log_std, h_t); running (batch,) 0 keeps h where an episode has ended."""
        new = torch.gru_cell(x, h, params["gru.weight_ih"], params["gru.weight_hh"], params["gru.bias_ih"],
                             params["gru.bias_hh"])
        if running is not None:
            r = running.to(new.dtype).unsqueeze(-1)
            new = r * new + (1 - r) * h
        mean = torch.nn.functional.linear(new, params["head.weight"], params["head.bias"])
        log_std = params["log_std"].expand_as(mean)
        if self.action_scale != 1.0:
            mean, log_std = mean * self.action_scale, log_std + math.log(self.action_scale)
        return mean, log_std, new

    def unroll(self, params: Params, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) of every step of whole trials: x (..., L, input_dim), mask (..., L), h_0 = 0."""
        lead, L = x.shape[:-2], x.shape[-2]
        xs, ms = x.reshape(-1, L, x.shape[-1]), mask.reshape(-1, L)
        h = self.initial_state(xs.shape[0], xs)
        means, log_stds = [], []
        for t in range(L):
            mean, log_std, h = self.step(params, xs[:, t], h, ms[:, t])
            means.append(mean)
            log_stds.append(log_std)
        shape = (*lead, L, self.act_dim)
        return torch.stack(means, 1).reshape(shape), torch.stack(log_stds, 1).reshape(shape)
