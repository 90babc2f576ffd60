"""Supervised task distributions: the H = 1 special case.

q(x1) draws the inputs, the action is the prediction, L is the loss. A batch of tasks yields a support set
(the data the learner adapts on) and a query set (the data the adapted learner is scored on), both as
tensors with a leading task dimension, drawn in one vectorised call.

`SupervisedTaskEnv` is the same distribution seen as a single Gymnasium env (registered as metarl/<Name>-v0):
one step, observation x, action the prediction, reward -L(prediction, y). Trainer and env draw from one
distribution object, so they cannot drift apart.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from envs.base import Split, TaskBatch, TaskDistribution, check_positive

Data = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Episode:
    """One meta-batch: task parameters, support (x, y) and query (x, y), all with leading dim = tasks."""

    tasks: TaskBatch
    support: Data
    query: Data

    def to(self, device: torch.device | str) -> "Episode":
        move = lambda d: tuple(t.to(device) for t in d)  # noqa: E731
        return Episode({k: v.to(device) for k, v in self.tasks.items()}, move(self.support), move(self.query))

    @property
    def num_tasks(self) -> int:
        return self.support[0].shape[0]


class SupervisedTaskDistribution(TaskDistribution):
    """A task distribution whose tasks are datasets: H = 1, the loss is a supervised loss.

    Subclasses set `loss`, `input_shape`, `output_dim`, `input_range` and `prediction_range` (the bounds of the
    single env's observation and action spaces)."""

    #: "mse" or "cross_entropy": the loss L of the task.
    loss: str = "mse"
    input_shape: tuple[int, ...] = ()
    output_dim: int = 1
    input_range: tuple[float, float] = (-np.inf, np.inf)
    prediction_range: tuple[float, float] = (-np.inf, np.inf)
    #: classification: some tasks have fewer classes than the head's `output_dim` outputs (labels 0..n-1 of a
    #: task with n classes); only a learner that reads its head off the support set can train on them.
    task_classes_vary: bool = False

    @abstractmethod
    def sample_data(self, tasks: TaskBatch, k: int, generator: torch.Generator, split: Split = "train") -> Data:
        """k labelled examples for each task: x of shape (tasks, k, ...), y of shape (tasks, k, ...)."""

    def sample_episode(
        self, n: int, k_support: int, k_query: int, generator: torch.Generator, split: Split = "train"
    ) -> Episode:
        check_positive(tasks=n, k_support=k_support, k_query=k_query)
        tasks = self.sample(n, generator, split)
        support, query = self.sample_support_query(tasks, k_support, k_query, generator, split)
        return Episode(tasks, support, query)

    def sample_support_query(
        self, tasks: TaskBatch, k_support: int, k_query: int, generator: torch.Generator, split: Split
    ) -> tuple[Data, Data]:
        """Disjoint support and query sets; the default draws them independently (continuous inputs)."""
        return self.sample_data(tasks, k_support, generator, split), self.sample_data(tasks, k_query, generator, split)

    def task_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """L(prediction, y) averaged over examples."""
        if self.loss == "mse":
            return F.mse_loss(prediction, target)
        return F.cross_entropy(prediction, target)


class SupervisedTaskEnv(gym.Env):
    """One task of a supervised (H = 1) task distribution as a Gymnasium env.

    Observation: one input x of the task; action: the prediction (regression) or the class logits
    (classification); reward: -L(action, y); terminated after one step. reset's info holds the task and its
    support set (`shots` examples, per class for classification) as support_x / support_y; the observation
    is a query example. The task comes from `task=` or `reset(options={"task": ...})`; otherwise reset draws
    one from the distribution with a generator seeded from the env's own seeded RNG.
    """

    metadata = {"render_modes": []}

    def __init__(self, distribution: SupervisedTaskDistribution | None = None, task: TaskBatch | dict | None = None,
                 split: Split = "train", shots: int = 1, factory: Callable[..., SupervisedTaskDistribution] | None = None,
                 **options: Any):
        if distribution is None:
            if factory is None:
                raise TypeError("SupervisedTaskEnv needs a distribution (or a factory of one)")
            distribution = factory(**options)
        self.dist, self.split, self.shots = distribution, split, int(shots)
        d = distribution
        self.observation_space = gym.spaces.Box(*d.input_range, shape=d.input_shape, dtype=np.float32)
        self.action_space = gym.spaces.Box(*d.prediction_range, shape=(d.output_dim,), dtype=np.float32)
        self._fixed_task = task
        self.task: TaskBatch | None = None
        self._x = np.zeros(d.input_shape, dtype=np.float32)
        self._y: torch.Tensor | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        gen = torch.Generator().manual_seed(int(self.np_random.integers(2**62)))
        task = self.dist.sample(1, gen, self.split)
        given = (options or {}).get("task", self._fixed_task)
        if given is not None:  # any array-like values, shaped like a sampled task's
            task = {k: torch.as_tensor(given[k], dtype=v.dtype).reshape(v.shape) for k, v in task.items()}
        self.task = task
        (sx, sy), (qx, qy) = self.dist.sample_support_query(task, self.shots, 1, gen, self.split)
        j = int(self.np_random.integers(qx.shape[1]))
        self._x, self._y = qx[0, j].numpy().astype(np.float32), qy[0, j]
        info = {"task": {k: v[0].tolist() for k, v in task.items()}, "support_x": sx[0].numpy(),
                "support_y": sy[0].numpy()}
        return self._x.copy(), info

    def step(self, action):
        if self._y is None:
            raise RuntimeError("call reset() before step()")
        pred = torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(1, -1)
        classify = self.dist.loss == "cross_entropy"
        y = self._y.reshape(1) if classify else self._y.reshape(1, -1).to(pred.dtype)
        info = {"label": int(self._y)} if classify else {"target": float(self._y.reshape(-1)[0])}
        return self._x.copy(), -float(self.dist.task_loss(pred, y)), True, False, info
