"""Batched rollouts: T tasks x E episodes x H steps in one loop, one policy call per step for all tasks.

Each task acts with its own parameters (per-task dicts with leading dim T, e.g. after adaptation): the policy
is applied under `vmap` over tasks. Actions are drawn from an explicit generator. Steps after an
episode terminated are kept in the tensors but masked out (mask 0, reward 0).

A recurrent policy (RL²) collects trials: `episodes` consecutive episodes of the same tasks, its memory
(metarl.nets.policies.Memory) carried from episode to episode and started afresh each trial; the data of a
trial is one sequence of episodes * H steps, with the policy's inputs kept for the loss to re-run them.

When the env's dynamics are a pure tensor function (`envs.batched.TensorDynamicsEnv`), a few steps of the
loop are one function of (params, obs, noise, env state): policy, action noise and env transition together,
which `compile=True` turns into one compiled call per `steps_per_call` steps (on CPU most of a small step is
per-op and per-call overhead).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from envs.base import TaskBatch
from envs.batched import BatchedTaskEnv, TensorDynamicsEnv
from metarl.core.compiling import compile_with_fallback
from metarl.nets import Params
from metarl.nets.policies import batched_outputs

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@contextmanager
def _torch_threads(n: int | None):
    """torch.set_num_threads(n) inside the block (nothing when n is None); the previous count after it.
    On 2 cores, HalfCheetah with MuJoCo's 2 physics threads: 44k env-steps/s closed loop with torch on 2
    threads, 59k with torch on 1 (scripts/bench_rollout.py)."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@dataclass
class Rollouts:
    """Trajectories of T tasks x E episodes (recurrent: trials of N episodes) x L = N * H steps; every tensor
    has leading dims (T, E, L)."""

    obs: torch.Tensor  # (T, E, L, obs_dim): the observation the action was taken in
    actions: torch.Tensor  # (T, E, L, act_dim)
    rewards: torch.Tensor  # (T, E, L), 0 after termination
    mask: torch.Tensor  # (T, E, L), 1.0 while the episode is running, 0.0 after it terminated
    log_probs: torch.Tensor  # (T, E, L): log pi(a|s) of the sampling policy
    #: (T, E, N): whether the env's success flag was raised in each episode, for envs that report one (Meta-World)
    success: torch.Tensor | None = None
    #: (T, E, L, input_dim): a recurrent policy's inputs (what its loss re-runs); None for a feed-forward one
    inputs: torch.Tensor | None = None
    #: episodes per sequence (a trial's N; 1 without memory)
    episodes: int = 1
    #: term -> (T, E, N): each reward term summed over each episode, for envs that report them (MuJoCo)
    reward_terms: dict[str, torch.Tensor] | None = None

    @property
    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each sequence (of one episode without memory), (T, E)."""
        return self.rewards.sum(-1)

    def returns_per_episode(self) -> torch.Tensor:
        """Undiscounted return of each episode of each sequence, (T, E, N)."""
        return self.rewards.reshape(*self.rewards.shape[:2], self.episodes, -1).sum(-1)

    def episode_lengths(self) -> torch.Tensor:
        """Steps each episode ran before it ended (terminated or reached H), (T, E, N)."""
        return self.mask.reshape(*self.mask.shape[:2], self.episodes, -1).sum(-1)

    @property
    def num_steps(self) -> int:
        return int(self.mask.sum())


class BatchedSampler:
    """Collects `Rollouts` from a `BatchedTaskEnv` with a Gaussian policy (feed-forward or recurrent).

    `params` are per-task (leading dim T: one vmapped policy call per step) or shared by all tasks (the
    module's own shapes: one plain call on all T * E observations, a single large matmul). `compile=True`
    compiles the loop body with torch.compile (the policy and, for a `TensorDynamicsEnv`, the env transition,
    `steps_per_call` steps per call; the largest divisor of H up to it, so one graph serves the whole
    horizon): a one-off cost of seconds per sampler and parameter layout (shared / per task).
    """

    def __init__(self, env: BatchedTaskEnv, policy: nn.Module, compile: bool = False, steps_per_call: int = 10):
        if steps_per_call < 1:
            raise ValueError(f"steps_per_call must be positive, got {steps_per_call}")
        self.env = env
        self.policy = policy
        self.recurrent = bool(getattr(policy, "recurrent", False))
        if self.recurrent and compile:
            raise ValueError("the sampler compiles feed-forward policies only")
        self._shapes = {k: v.shape for k, v in policy.named_parameters()}
        self._fused = isinstance(env, TensorDynamicsEnv) and not self.recurrent
        H, N = env.horizon, env.num_envs
        self.steps_per_call = max(d for d in range(1, min(steps_per_call, H) + 1) if H % d == 0) if self._fused else 1
        body = {True: self._fused_shared, False: self._fused_per_task} if self._fused else \
            {True: self._act_shared, False: self._act_per_task}
        if compile:
            body = {k: compile_with_fallback(f, self, "sampler compile") for k, f in body.items()}
        self._body = body
        self.obs_dim = int(env.single_observation_space.shape[0])
        self.act_dim = int(env.single_action_space.shape[0])
        dev, dt = env.device, getattr(env, "dtype", torch.float32)
        # preallocated (H, N, ...) buffers, time-major so each step writes one contiguous slice
        self._obs = torch.empty(H, N, self.obs_dim, device=dev, dtype=dt)
        self._act = torch.empty(H, N, self.act_dim, device=dev, dtype=dt)
        self._rew = torch.empty(H, N, device=dev, dtype=dt)
        self._term = torch.empty(H, N, device=dev, dtype=torch.bool)
        self._logp = torch.empty(H, N, device=dev, dtype=dt)
        if self.recurrent:
            self._inputs = torch.empty(H, N, policy.input_dim, device=dev, dtype=dt)

    def collect(self, params: Params, tasks: TaskBatch, generator: torch.Generator, deterministic: bool = False,
                shard: tuple[int, int] | None = None, episodes: int = 1) -> Rollouts:
        """Roll out every sub-env for H steps; `params` per task (leading dim T) or shared by all tasks.
        episodes > 1 (a recurrent policy): a trial of that many episodes of the same tasks, each reset anew.

        All randomness (action noise, the env's reset noise) comes from `generator`. `shard` = (first task,
        total tasks): these T tasks are tasks first..first+T-1 of a larger batch split across processes; the
        noise is drawn for the whole batch and sliced, so each task sees the noise it would see unsplit."""
        if episodes > 1 and not self.recurrent:
            raise ValueError("trials of several episodes need a recurrent policy (a memory to carry across them)")
        with torch.no_grad(), _torch_threads(1 if self.env.steps_on_own_threads else None):
            return self._collect({k: v.detach() for k, v in params.items()}, tasks, generator, deterministic,
                                 shard, episodes)

    def _collect(self, params: Params, tasks: TaskBatch, generator: torch.Generator, deterministic: bool,
                 shard: tuple[int, int] | None, episodes: int) -> Rollouts:
        env = self.env
        T, E, H, N = env.num_tasks, env.episodes_per_task, env.horizon, env.num_envs
        body = self._body[all(params[k].shape == shape for k, shape in self._shapes.items())]
        first, total = shard or (0, T)
        memory, pieces, successes, terms = None, [], [], []
        for n in range(episodes):
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device))
            obs, _ = env.reset(seed=seed, options={"shard": (first, total), **({"tasks": tasks} if n == 0 else {})})
            scale = torch.tensor(0.0 if deterministic else 1.0, device=obs.device, dtype=obs.dtype)
            # all the noise in one call: fewer ops per step
            noise = torch.randn((H, total * E, self.act_dim), generator=generator, device=obs.device, dtype=obs.dtype)
            noise = noise[:, first * E : first * E + N]
            if self.recurrent:
                memory = self.policy.start(N, obs) if memory is None else memory.new_episode()
                running = torch.ones(N, dtype=torch.bool, device=obs.device)
                for t in range(H):
                    self._obs[t] = obs
                    mean, log_std, memory, self._inputs[t] = self.policy.act(params, obs, memory, running)
                    self._act[t], self._logp[t] = self._draw(mean, log_std, noise[t], scale)
                    obs, self._rew[t], self._term[t], _, _ = env.step(self._act[t])
                    memory = memory.after_step(self._act[t], self._rew[t], running)
                    running = running & ~self._term[t]
            elif self._fused:
                state, k = env.state, self.steps_per_call
                for t in range(0, H, k):
                    chunk = slice(t, t + k)
                    (self._obs[chunk], self._act[chunk], self._logp[chunk], self._rew[chunk], self._term[chunk],
                     obs, state) = body(params, obs, noise[chunk], scale, state)
                env.set_state(state, H)
            else:
                for t in range(H):
                    self._obs[t] = obs
                    self._act[t], self._logp[t] = body(params, obs, noise[t], scale)
                    obs, self._rew[t], self._term[t], _, _ = env.step(self._act[t])
            mask = torch.ones(H, N, device=obs.device, dtype=obs.dtype)  # running when the step was taken
            mask[1:] = ~self._term[:-1]
            buffers = [self._obs, self._act, self._rew, mask, self._logp] + ([self._inputs] if self.recurrent else [])
            # (H, T*E, ...) -> (T, E, H, ...)
            pieces.append([b.view(H, T, E, *b.shape[2:]).movedim(0, 2).clone() for b in buffers])
            success = getattr(env, "episode_success", None)
            if success is not None:
                successes.append(success.to(obs.device).view(T, E).clone())
            sums = getattr(env, "episode_reward_terms", None)
            if sums:
                terms.append({k: v.to(obs.device).view(T, E).clone() for k, v in sums.items()})
        # one episode: its tensors as they are (the layout decides the summation order of later reductions)
        obs, actions, rewards, mask, log_probs, *inputs = (parts[0] if episodes == 1 else torch.cat(parts, 2)
                                                           for parts in zip(*pieces))
        return Rollouts(obs=obs, actions=actions, rewards=rewards, mask=mask, log_probs=log_probs,
                        success=torch.stack(successes, -1) if successes else None,
                        inputs=inputs[0] if inputs else None, episodes=episodes,
                        reward_terms={k: torch.stack([t[k] for t in terms], -1) for k in terms[0]} if terms else None)

    @staticmethod
    def _draw(mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor):
        """(action, log pi(action)): the action is mean + std * z with z = scale * noise, so its log-probability
        needs no second policy pass: sum(-z^2 / 2 - log_std - log(2 pi) / 2)."""
        z = scale * noise
        return mean + torch.exp(log_std) * z, (-0.5 * z * z - log_std - _HALF_LOG_2PI).sum(-1)

    # Shared and per-task params go through separate functions, so that each compiles to its own graph.
    def _act_shared(self, params: Params, obs: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor):
        return self._sample(params, obs, noise, scale, shared=True)

    def _act_per_task(self, params: Params, obs: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor):
        return self._sample(params, obs, noise, scale, shared=False)

    def _fused_shared(self, params: Params, obs: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor, state):
        return self._fused_steps(params, obs, noise, scale, state, shared=True)

    def _fused_per_task(self, params: Params, obs: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor, state):
        return self._fused_steps(params, obs, noise, scale, state, shared=False)

    def _sample(self, params: Params, obs: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor, shared: bool):
        """(action, log pi(action)) for every sub-env (a feed-forward policy)."""
        if shared:
            mean, log_std = self.policy.call(params, obs)
        else:
            T, E = self.env.num_tasks, self.env.episodes_per_task
            mean, log_std = batched_outputs(self.policy, params, obs.view(T, E, self.obs_dim))
            mean, log_std = mean.reshape(-1, self.act_dim), log_std.reshape(-1, self.act_dim)
        return self._draw(mean, log_std, noise, scale)

    def _fused_steps(self, params: Params, obs: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor, state,
                     shared: bool):
        """len(noise) steps of policy and env transition: the per-step observations, actions, log-probs,
        rewards and terminated flags stacked (k, N, ...), then the last observation and the env state."""
        out: tuple[list, ...] = ([], [], [], [], [])
        for t in range(noise.shape[0]):
            act, logp = self._sample(params, obs, noise[t], scale, shared)
            before = obs
            state, obs, reward, terminated = self.env.transition(state, act.to(self.env.dtype))
            for buf, x in zip(out, (before, act, logp, reward, terminated)):
                buf.append(x)
        return (*(torch.stack(b) for b in out), obs, state)
