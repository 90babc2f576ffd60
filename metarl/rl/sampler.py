"""Batched rollouts: T tasks x E episodes x H steps in one loop, one policy call per step for all tasks.

Each task acts with its own parameters (per-task dicts with leading dim T, e.g. after adaptation): the policy
is `functional_call`ed under `vmap` over tasks. Actions are drawn from an explicit generator. Steps after an
episode terminated are kept in the tensors but masked out (mask 0, reward 0).

When the env's dynamics are a pure tensor function (`envs.batched.TensorDynamicsEnv`), one step of the loop
is one function of (params, obs, noise, env state): policy, action noise and env transition together, which
`compile=True` turns into one compiled call per step (on CPU most of a small step is per-op overhead).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from envs.base import TaskBatch
from envs.batched import BatchedTaskEnv, TensorDynamicsEnv
from metarl.compiling import compile_with_fallback
from metarl.rl.policy import Params, batched_policy_outputs, policy_outputs

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class Rollouts:
    """Trajectories of T tasks x E episodes x H steps; every tensor has leading dims (T, E, H)."""

    obs: torch.Tensor  # (T, E, H, obs_dim): the observation the action was taken in
    actions: torch.Tensor  # (T, E, H, act_dim)
    rewards: torch.Tensor  # (T, E, H), 0 after termination
    mask: torch.Tensor  # (T, E, H), 1.0 while the episode is running, 0.0 after it terminated
    log_probs: torch.Tensor  # (T, E, H): log pi(a|s) of the sampling policy

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
    compiles the per-step function with torch.compile (policy and, for a `TensorDynamicsEnv`, the env step):
    a one-off cost of seconds per sampler and parameter layout (shared / per task), worth it for training.
    """

    def __init__(self, env: BatchedTaskEnv, policy: nn.Module, compile: bool = False):
        self.env = env
        self.policy = policy
        self._shapes = {k: v.shape for k, v in policy.named_parameters()}
        self._fused = isinstance(env, TensorDynamicsEnv)
        steps = {True: self._step_shared, False: self._step_per_task}
        if compile:
            steps = {k: compile_with_fallback(f, self, "sampler compile") for k, f in steps.items()}
        self._steps = steps
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
        step = self._steps[shared]
        obs, _ = env.reset(options={"tasks": tasks})
        state = env.state if self._fused else None
        scale = torch.tensor(0.0 if deterministic else 1.0, device=obs.device, dtype=obs.dtype)
        # all the noise in one call: fewer ops per step
        noise = torch.randn((H, N, self.act_dim), generator=generator, device=obs.device, dtype=obs.dtype)
        self._mask[0].fill_(1.0)
        for t in range(H):
            self._obs[t] = obs
            if self._fused:
                act, logp, state, obs, reward, terminated = step(params, obs, noise[t], scale, state)
            else:
                act, logp = step(params, obs, noise[t], scale, None)
                obs, reward, terminated, _, _ = env.step(act)
            self._act[t] = act
            self._logp[t] = logp
            self._rew[t] = reward
            if t + 1 < H:
                torch.logical_not(terminated, out=self._mask[t + 1])
        if self._fused:
            env.set_state(state, H)

        def tasks_first(buf: torch.Tensor) -> torch.Tensor:  # (H, T*E, ...) -> (T, E, H, ...)
            return buf.view(H, T, E, *buf.shape[2:]).movedim(0, 2).clone()

        return Rollouts(
            obs=tasks_first(self._obs),
            actions=tasks_first(self._act),
            rewards=tasks_first(self._rew),
            mask=tasks_first(self._mask),
            log_probs=tasks_first(self._logp),
        )

    # One step for shared and one for per-task params: two functions, so each compiles to its own graph.
    def _step_shared(self, params: Params, obs: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor, state):
        mean, log_std = policy_outputs(self.policy, params, obs)
        return self._sample_and_step(mean, log_std, noise, scale, state)

    def _step_per_task(self, params: Params, obs: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor, state):
        T, E = self.env.num_tasks, self.env.episodes_per_task
        mean, log_std = batched_policy_outputs(self.policy, params, obs.view(T, E, self.obs_dim))
        return self._sample_and_step(mean.reshape(-1, self.act_dim), log_std.reshape(-1, self.act_dim), noise, scale, state)

    def _sample_and_step(self, mean, log_std, noise, scale, state):
        """(action, log pi(action)), plus (next state, obs, reward, terminated) for a TensorDynamicsEnv.

        The action is mean + std * z with z = scale * noise, so its log-probability needs no second policy
        pass: sum(-z^2 / 2 - log_std - log(2 pi) / 2)."""
        z = scale * noise
        act = mean + torch.exp(log_std) * z
        logp = (-0.5 * z * z - log_std - _HALF_LOG_2PI).sum(-1)
        if state is None:
            return act, logp
        return (act, logp, *self.env.transition(state, act.to(self.env.dtype)))
