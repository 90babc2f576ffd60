"""Sinusoid regression (MAML paper, section 5.1).

Task parameters: amplitude A ~ U[0.1, 5], phase b ~ U[0, pi]. Inputs x ~ U[-5, 5]; target y = A sin(x - b);
loss: mean squared error. Split: a checkerboard of 8 x 8 cells over the normalised (A, b) square.
"""
from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.base import CheckerboardBoxTasks, Split, TaskBatch, check_positive
from envs.supervised import Data, SupervisedTaskDistribution

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


class SinusoidTasks(CheckerboardBoxTasks, SupervisedTaskDistribution):
    name = "sinusoid"
    kind = "regression"
    env_id = "metarl/Sinusoid-v0"
    loss = "mse"
    input_shape = (1,)
    x_range = X_RANGE
    output_dim = 1

    def sample(self, n: int, generator: torch.Generator, split: Split = "train") -> TaskBatch:
        u = self.unit_sample(n, 2, generator, split)
        amplitude = AMPLITUDE[0] + (AMPLITUDE[1] - AMPLITUDE[0]) * u[:, 0]
        phase = PHASE[0] + (PHASE[1] - PHASE[0]) * u[:, 1]
        return {"amplitude": amplitude, "phase": phase}

    @staticmethod
    def target(tasks: TaskBatch, x: torch.Tensor) -> torch.Tensor:
        """The true function of each task at x of shape (tasks, k, 1)."""
        return tasks["amplitude"][:, None, None] * torch.sin(x - tasks["phase"][:, None, None])

    def sample_data(self, tasks: TaskBatch, k: int, generator: torch.Generator, split: Split = "train") -> Data:
        check_positive(k=k)
        n = tasks["amplitude"].shape[0]
        x = X_RANGE[0] + (X_RANGE[1] - X_RANGE[0]) * torch.rand(n, k, 1, generator=generator, dtype=self.dtype)
        return x, self.target(tasks, x)

    def sample_support_query(self, tasks: TaskBatch, k_support: int, k_query: int, generator: torch.Generator,
                             split: Split) -> tuple[Data, Data]:
        # One draw for both sets (same law as two draws): fewer small ops on the training hot path.
        x, y = self.sample_data(tasks, k_support + k_query, generator, split)
        return (x[:, :k_support], y[:, :k_support]), (x[:, k_support:], y[:, k_support:])


class SinusoidEnv(gym.Env):
    """One sinusoid task as an H = 1 environment.

    Observation: x. Action: the prediction y_hat. Reward: -(y_hat - y)^2. Terminated after one step.
    The task comes from `task=` at construction or `reset(options={"task": ...})`; when neither is given,
    reset draws one from `SinusoidTasks` with a generator seeded from the env's own seeded RNG.
    """

    metadata = {"render_modes": []}

    def __init__(self, task: TaskBatch | dict[str, Any] | None = None, split: Split = "train"):
        self.observation_space = gym.spaces.Box(X_RANGE[0], X_RANGE[1], shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-10.0, 10.0, shape=(1,), dtype=np.float32)
        self.split = split
        self._fixed_task = task
        self.task: dict[str, float] | None = None
        self._x = np.zeros(1, dtype=np.float32)

    @staticmethod
    def _as_floats(task: TaskBatch | dict[str, Any]) -> dict[str, float]:
        return {k: float(torch.as_tensor(task[k]).reshape(-1)[0]) for k in ("amplitude", "phase")}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        task = (options or {}).get("task", self._fixed_task)
        if task is None:
            gen = torch.Generator().manual_seed(int(self.np_random.integers(2**62)))
            task = SinusoidTasks().sample(1, gen, self.split)
        self.task = self._as_floats(task)
        self._x = self.np_random.uniform(X_RANGE[0], X_RANGE[1], size=1).astype(np.float32)
        return self._x.copy(), {"task": dict(self.task)}

    def step(self, action):
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        y = self.task["amplitude"] * math.sin(float(self._x[0]) - self.task["phase"])
        err = float(np.asarray(action, dtype=np.float64).reshape(-1)[0]) - y
        return self._x.copy(), -err * err, True, False, {"target": y}
