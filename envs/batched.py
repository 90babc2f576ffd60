"""The batched environment contract: T tasks x E episodes on one torch device.

It follows Gymnasium's `gymnasium.vector.VectorEnv` API (num_envs, single_/observation_space,
single_/action_space, reset(seed, options) -> (obs, info), step(actions) -> (obs, reward, terminated,
truncated, info)) with three differences that make meta-RL rollouts one batched loop:

* observations, actions, rewards and flags are torch tensors on `self.device`, shape (T * E, ...),
  sub-env i = task i // E, episode i % E;
* task parameters are data: `set_tasks(tasks)` gives each of the T tasks its parameters (a TaskBatch whose
  tensors have leading dimension T); every sub-env of a task shares them;
* a collection has a fixed horizon H and no autoreset: a sub-env that terminates keeps returning its last
  observation with reward 0 and terminated=True until the next `reset`. The sampler masks those steps.

reset(options={"shard": (first, total)}): these T tasks are tasks first..first+T-1 of a batch of `total` that
torch.distributed ranks split; what a reset draws from its seed (initial-state noise, sub-env seeds) is drawn
for the whole batch and this part taken, so every sub-env starts as it would in one process.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any

import gymnasium as gym
import torch

from envs.base import TaskBatch


class BatchedTaskEnv(gym.vector.VectorEnv):
    """Base class of batched envs. Subclasses implement `set_tasks`, `_reset`, `_step`."""

    #: True for envs whose step runs on a CPU thread pool of their own (MuJoCo on CPU threads): a sampler then
    #: keeps torch to one thread while it collects, so that torch's idle OpenMP workers (which spin after each
    #: parallel op) do not take cores from the physics threads.
    steps_on_own_threads: bool = False

    def __init__(
        self,
        num_tasks: int,
        episodes_per_task: int,
        horizon: int,
        single_observation_space: gym.Space,
        single_action_space: gym.Space,
        device: torch.device | str = "cpu",
    ):
        for name, value in (("num_tasks", num_tasks), ("episodes_per_task", episodes_per_task), ("horizon", horizon)):
            if int(value) <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.num_tasks = int(num_tasks)
        self.episodes_per_task = int(episodes_per_task)
        self.horizon = int(horizon)
        self.num_envs = self.num_tasks * self.episodes_per_task
        self.device = torch.device(device)
        self.single_observation_space = single_observation_space
        self.single_action_space = single_action_space
        self.observation_space = gym.vector.utils.batch_space(single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(single_action_space, self.num_envs)
        self.tasks: TaskBatch | None = None
        self.t = 0
        self.shard = (0, self.num_tasks)  # (first task, tasks in the whole batch) of the last reset

    @abstractmethod
    def set_tasks(self, tasks: TaskBatch) -> None:
        """Give the T tasks their parameters (tensors with leading dimension T)."""

    def repeat_per_episode(self, value: torch.Tensor) -> torch.Tensor:
        """(T, ...) -> (T * E, ...): one row per sub-env."""
        return value.to(self.device).repeat_interleave(self.episodes_per_task, dim=0)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if options and "tasks" in options:
            self.set_tasks(options["tasks"])
        if self.tasks is None:
            raise RuntimeError("set_tasks(tasks) (or reset(options={'tasks': ...})) before reset()")
        first, total = (options or {}).get("shard") or (0, self.num_tasks)
        if not 0 <= first <= total - self.num_tasks:
            raise ValueError(f"shard {(first, total)} does not hold this env's {self.num_tasks} tasks")
        self.shard, self.t = (int(first), int(total)), 0
        return self._reset(seed)

    @property
    def worlds(self) -> tuple[int, int]:
        """(first sub-env, sub-envs of the whole batch): where this env's sub-envs sit in it (`shard`)."""
        return self.shard[0] * self.episodes_per_task, self.shard[1] * self.episodes_per_task

    def step(self, actions: torch.Tensor):
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"expected actions for {self.num_envs} sub-envs, got shape {tuple(actions.shape)}")
        self.t += 1
        return self._step(actions)

    @abstractmethod
    def _reset(self, seed: int | None) -> tuple[torch.Tensor, dict[str, Any]]:
        ...

    @abstractmethod
    def _step(self, actions: torch.Tensor):
        ...


class TensorDynamicsEnv(BatchedTaskEnv):
    """A batched env whose dynamics are a pure torch function: `transition(state, actions) -> (state, obs,
    reward, terminated)`, with the whole mutable state in `self.state` (a dict of tensors, task parameters
    included) and no side effects. `_step` follows from it. Because nothing else happens in a step, a sampler
    may run `transition` itself, fused with the policy into one compiled function (`metarl.rl.sampler`), and
    hand the final state back with `set_state`."""

    state: dict[str, torch.Tensor]

    @staticmethod
    @abstractmethod
    def transition(state: dict[str, torch.Tensor], actions: torch.Tensor):
        """(state, actions) -> (next state, observations, rewards, terminated); shapes (T * E, ...)."""

    def set_state(self, state: dict[str, torch.Tensor], t: int) -> None:
        """The state after `t` steps taken outside `step` (by a sampler that ran `transition` itself)."""
        self.state, self.t = state, int(t)

    def _step(self, actions: torch.Tensor):
        self.state, obs, reward, terminated = self.transition(self.state, actions.to(self.dtype))
        truncated = torch.full_like(terminated, self.t >= self.horizon)
        return obs, reward, terminated, truncated, {}
