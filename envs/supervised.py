"""Supervised task distributions: the H = 1 special case.

q(x1) draws the inputs, the action is the prediction, L is the loss. A batch of tasks yields a support set
(the data the learner adapts on) and a query set (the data the adapted learner is scored on), both as
tensors with a leading task dimension, drawn in one vectorised call.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch

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
    """A task distribution whose tasks are datasets: H = 1, the loss is a supervised loss."""

    #: "mse" or "cross_entropy": the loss L of the task.
    loss: str = "mse"

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
