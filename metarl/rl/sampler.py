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
from metarl.rl.policy import Params, batched_policy_outputs, gaussian_log_prob, policy_outputs


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
    """Collects `Rollouts` from a `BatchedTaskEnv` with a Gaussian policy.

    `params` are per-task (leading dim T: one vmapped policy call per step) or shared by all tasks (the
    module's own shapes: one plain call on all T * E observations, a single large matmul). `compile=True`
    compiles the per-step action function with torch.compile (worth it for long collections on CPU).
    """

    def __init__(self, env: BatchedTaskEnv, policy: nn.Module, compile: bool = False):
        self.env = env
        self.policy = policy
        self._shapes = {k: v.shape for k, v in policy.named_parameters()}
        self._act_fn = torch.compile(_act, dynamic=False) if compile else _act
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
        """Roll out every sub-env for H steps; `params` per task (leading dim T) or shared by all tasks."""
        env = self.env
        T, E, H, N = env.num_tasks, env.episodes_per_task, env.horizon, env.num_envs
        params = {k: v.detach() for k, v in params.items()}
        shared = all(params[k].shape == shape for k, shape in self._shapes.items())
        obs, _ = env.reset(options={"tasks": tasks})
        alive = torch.ones(N, device=env.device, dtype=self._mask.dtype)
        scale = 0.0 if deterministic else 1.0
        # all the noise in one call; log-probs after the loop in one call: fewer ops per step
        noise = torch.randn((H, N, self.act_dim), generator=generator, device=obs.device, dtype=obs.dtype)
        for t in range(H):
            o = obs if shared else obs.view(T, E, self.obs_dim)
            n = noise[t] if shared else noise[t].view(T, E, self.act_dim)
            self._obs[t] = obs
            self._act[t] = self._act_fn(self.policy, params, o, n, scale, shared).view(N, self.act_dim)
            self._mask[t] = alive
            obs, reward, terminated, _, _ = env.step(self._act[t])
            self._rew[t] = reward
            alive = (~terminated).to(alive.dtype)
        obs_all, act_all = self._obs.view(H, T, E, self.obs_dim), self._act.view(H, T, E, self.act_dim)
        if shared:
            mean, log_std = policy_outputs(self.policy, params, obs_all)
        else:  # (T, H*E, d) per task
            mean, log_std = batched_policy_outputs(self.policy, params, obs_all.movedim(0, 1).reshape(T, H * E, -1))
            mean, log_std = (x.view(T, H, E, -1).movedim(1, 0) for x in (mean, log_std))
        self._logp.copy_(gaussian_log_prob(mean, log_std, act_all).view(H, N))

        def tasks_first(buf: torch.Tensor) -> torch.Tensor:  # (H, T*E, ...) -> (T, E, H, ...)
            return buf.view(H, T, E, *buf.shape[2:]).movedim(0, 2).clone()

        return Rollouts(
            obs=tasks_first(self._obs),
            actions=tasks_first(self._act),
            rewards=tasks_first(self._rew),
            mask=tasks_first(self._mask),
            log_probs=tasks_first(self._logp),
        )


def _act(policy: nn.Module, params: Params, obs: torch.Tensor, noise: torch.Tensor, scale: float, shared: bool):
    """Actions mean + scale * std * noise for shared or per-task params."""
    if shared:
        mean, log_std = policy_outputs(policy, params, obs)
    else:
        mean, log_std = batched_policy_outputs(policy, params, obs)
    return mean + scale * torch.exp(log_std) * noise
