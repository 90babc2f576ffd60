"""RL²'s recurrent Gaussian policy (Duan et al. 2016): a GRU whose hidden state carries across the episodes of a
trial, so that it can adapt to the task in context, without a gradient step.

    x_t = (obs_t, a_{t-1}, r_{t-1}, first_t)       a, r of the last step taken (zeros at the trial's start);
                                                   first_t = 1 on the first step of every episode
    h_t = GRU(x_t, h_{t-1})    on running steps;   h_t = h_{t-1} on steps after an episode ended early (masked)
    pi(a_t | history) = N(action_scale * W h_t + b, diag(action_scale * exp(log_std))^2)

h_0 = 0 at the start of every trial. The inputs of every step are kept with the data, so the loss re-runs the
same recurrence (`unroll`) that the sampler ran step by step (`step`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from metarl.models import reinit_
from metarl.params import Params


class GRUGaussianPolicy(nn.Module):
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
