"""Task distributions: task parameters are data.

A task is T = {L, q(x1), q(x_{t+1} | x_t, a_t), H}. A `TaskDistribution` draws the *parameters* of tasks
(amplitudes, goals, velocities, class indices, ...) as a batch of tensors; environments receive those
parameters, they never invent tasks. Supervised tasks are the H = 1 case.

Train / test split. Every distribution has a fixed, disjoint split. Continuous distributions use
`checkerboard_split`: the unit cube of normalised task parameters is cut into a fixed grid and the cells
are coloured like a checkerboard; train tasks come from one colour, test tasks from the other. Both halves
cover the whole range of every parameter, and within a half the law is uniform, so the two splits follow
the same marginal distribution and share no task.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import torch

Split = Literal["train", "test"]
TaskBatch = dict[str, torch.Tensor]


class EnvFailure(RuntimeError):
    """An environment raised during a rollout (e.g. in a vector env's worker process): training stops with
    this message and keeps its last checkpoint."""
SPLITS = ("train", "test")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")


def checkerboard_split(u: torch.Tensor, split: str, cells: int = 8) -> torch.Tensor:
    """Move uniform points `u` in [0, 1)^d (shape (n, d)) onto the cells of one checkerboard colour.

    A point whose cell has the wrong colour is shifted by one cell along the last axis (wrapping around),
    which maps the wrong colour onto the right one bijectively and keeps the law uniform on that colour.
    With d == 1 the "checkerboard" is alternating intervals.
    """
    check_split(split)
    want = 0 if split == "train" else 1
    idx = torch.clamp((u * cells).floor(), 0, cells - 1)
    parity = idx.sum(dim=-1).remainder(2)
    wrong = parity != want
    shifted = u[..., -1] + wrong.to(u.dtype) / cells
    last = torch.where(shifted >= 1.0, shifted - 1.0, shifted)
    return torch.cat([u[..., :-1], last.unsqueeze(-1)], dim=-1)


def checkerboard_split_of(u: torch.Tensor, cells: int = 8) -> list[str]:
    """The split each point of `u` (n, d) in [0, 1)^d belongs to (for tests and diagnostics)."""
    idx = torch.clamp((u * cells).floor(), 0, cells - 1)
    parity = idx.sum(dim=-1).remainder(2)
    return ["train" if int(p) == 0 else "test" for p in parity]


class CheckerboardBoxTasks:
    """Mixin for task distributions whose parameters are uniform on a box: draws points in [0, 1)^d on the
    checkerboard colour of the split (train and test tasks disjoint, each uniform on its half)."""

    def __init__(self, split_cells: int = 8, dtype: torch.dtype = torch.float32):
        check_positive(split_cells=split_cells)
        self.split_cells = split_cells
        self.dtype = dtype

    def unit_sample(self, n: int, d: int, generator: torch.Generator, split: Split) -> torch.Tensor:
        """n points in [0, 1)^d of `split`'s colour, shape (n, d)."""
        check_positive(tasks=n)
        u = torch.rand(n, d, generator=generator, dtype=self.dtype)
        return checkerboard_split(u, split, self.split_cells)


class TaskDistribution(ABC):
    """A distribution over tasks whose parameters are tensors. Subclasses set `name` (the family name in
    `envs.registry`) and implement `sample`."""

    name: str = ""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator, split: Split = "train") -> TaskBatch:
        """Parameters of `n` tasks of `split`, each value a tensor with leading dimension n."""


def num_tasks(tasks: TaskBatch) -> int:
    return next(iter(tasks.values())).shape[0]


def task_at(tasks: TaskBatch, i: int) -> TaskBatch:
    """Task `i` of a batch, as a batch of size 1."""
    return {k: v[i : i + 1] for k, v in tasks.items()}


def check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
