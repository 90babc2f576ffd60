"""Batched rollouts: T tasks x E episodes x H steps in one loop, one policy call per step for all tasks.

Each task acts with its own parameters (per-task dicts with leading dim T, e.g. after adaptation): the policy
is `functional_call`ed under `vmap` over tasks. Actions are drawn from an explicit generator. Steps after an
episode terminated are kept in the tensors but masked out (mask 0, reward 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from envs.base import TaskBatch
from envs.batched import BatchedTaskEnv
from metarl.rl.policy import Params, batched_policy_outputs, gaussian_log_prob


@dataclass
class Rollouts:
    """Trajectories of T tasks x E episodes x H steps; every tensor has leading dims (T, E, H)."""

    obs: torch.Tensor  # (T, E, H, obs_dim): the observation the action was taken in
    actions: torch.Tensor  # (T, E, H, act_dim)
    rewards: torch.Tensor  # (T, E, H), 0 after termination
    mask: torch.Tensor  # (T, E, H), 1.0 while the episode is running, 0.0 after it terminated
    log_probs: torch.Tensor  # (T, E, H): log pi(a|s) of the sampling policy, for diagnostics

    @property
    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode, (T, E)."""
        return self.rewards.sum(-1)

    @property
    def num_steps(self) -> int:
        return int(self.mask.sum())


class BatchedSampler:
    """Collects `Rollouts` from a `BatchedTaskEnv` with a Gaussian policy given as per-task parameters."""

    def __init__(self, env: BatchedTaskEnv, policy: nn.Module):
        self.env = env
        self.policy = policy
        T, E, H, N = env.num_tasks, env.episodes_per_task, env.horizon, env.num_envs
        self.obs_dim = int(env.single_observation_space.shape[0])
        self.act_dim = int(env.single_action_space.shape[0])
        dev, dt = env.device, getattr(env, "dtype", torch.float32)
        # preallocated (H, N, ...) buffers, time-major so each step writes one contiguous slice
        self._obs = torch.empty(H, N, self.obs_dim, device=dev, dtype=dt)
        self._act = torch.empty(H, N, self.act_dim, device=dev, dtype=dt)
        self._rew = torch.empty(H, N, device=dev, dtype=dt)
        self._mask = torch.empty(H, N, device=dev, dtype=dt)
        self._logp = torch.empty(H, N, device=dev, dtype=dt)

    @torch.no_grad()
    def collect(self, params: Params, tasks: TaskBatch, generator: torch.Generator, deterministic: bool = False) -> Rollouts:
        """Roll out every sub-env for H steps; `params` has leading dim T (one parameter set per task)."""
        env = self.env
        T, E, H, N = env.num_tasks, env.episodes_per_task, env.horizon, env.num_envs
        params = {k: v.detach() for k, v in params.items()}
        obs, _ = env.reset(options={"tasks": tasks})
        alive = torch.ones(N, device=env.device, dtype=self._mask.dtype)
        for t in range(H):
            mean, log_std = batched_policy_outputs(self.policy, params, obs.view(T, E, self.obs_dim))
            if deterministic:
                action = mean
            else:
                noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
                action = mean + torch.exp(log_std) * noise
            self._obs[t] = obs
            self._act[t] = action.view(N, self.act_dim)
            self._logp[t] = gaussian_log_prob(mean, log_std, action).view(N)
            self._mask[t] = alive
            obs, reward, terminated, _, _ = env.step(self._act[t])
            self._rew[t] = reward
            alive = (~terminated).to(alive.dtype)

        def tasks_first(buf: torch.Tensor) -> torch.Tensor:  # (H, T*E, ...) -> (T, E, H, ...)
            return buf.view(H, T, E, *buf.shape[2:]).movedim(0, 2).clone()

        return Rollouts(
            obs=tasks_first(self._obs),
            actions=tasks_first(self._act),
            rewards=tasks_first(self._rew),
            mask=tasks_first(self._mask),
            log_probs=tasks_first(self._logp),
        )
