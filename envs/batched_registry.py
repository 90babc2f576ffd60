"""Batched envs by name: `make_batched_env("Navigation2D", num_tasks, episodes_per_task)`.

Each entry knows its factory, the task distribution that feeds it, the matching single Gymnasium env id and
its default horizon, so scripts (benchmarks, trainers) can build either side of a comparison from one name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from envs.batched import BatchedTaskEnv


@dataclass(frozen=True)
class BatchedEnvSpec:
    """How to build one batched env family."""

    factory: Callable[..., BatchedTaskEnv]
    """Called as factory(num_tasks, episodes_per_task, horizon, device=..., **kw)."""
    task_distribution: str
    """Registry name of the task distribution whose `sample` gives the tasks (see envs.make_task_distribution)."""
    single_env_id: str
    """The registered single Gymnasium env with the same dynamics (for checks and baselines)."""
    horizon: int
    """Default horizon H."""


_BATCHED: dict[str, BatchedEnvSpec] = {}


def register_batched_env(name: str, spec: BatchedEnvSpec) -> None:
    _BATCHED[name] = spec


def known_batched_envs() -> list[str]:
    return sorted(_BATCHED)


def batched_env_spec(name: str) -> BatchedEnvSpec:
    """The spec of a batched env; an unknown name raises KeyError listing the known ones."""
    if name not in _BATCHED:
        raise KeyError(f"unknown batched env {name!r}; known: {', '.join(known_batched_envs())}")
    return _BATCHED[name]


def make_batched_env(
    name: str,
    num_tasks: int,
    episodes_per_task: int,
    horizon: int | None = None,
    device: torch.device | str = "cpu",
    **kw: Any,
) -> BatchedTaskEnv:
    """Build the batched env `name` for num_tasks x episodes_per_task sub-envs (horizon: the spec's default)."""
    spec = batched_env_spec(name)
    return spec.factory(num_tasks, episodes_per_task, spec.horizon if horizon is None else horizon, device=device, **kw)


def _navigation(num_tasks: int, episodes_per_task: int, horizon: int, device="cpu", **kw: Any) -> BatchedTaskEnv:
    from envs.navigation import BatchedNavigation2D

    return BatchedNavigation2D(num_tasks, episodes_per_task, horizon, device=device, **kw)


register_batched_env(
    "Navigation2D", BatchedEnvSpec(_navigation, "navigation2d", "metarl/Navigation2D-v0", horizon=100)
)


def _mujoco(name: str) -> Callable[..., BatchedTaskEnv]:
    def make(*args: Any, **kw: Any) -> BatchedTaskEnv:
        from envs.mujoco.batched import batched_factory  # imports mujoco only when an env is built

        return batched_factory(name)(*args, **kw)

    return make


def _register_mujoco() -> None:
    from envs.mujoco import BATCHED_NAMES  # imports no mujoco

    for name, dist in BATCHED_NAMES.items():
        register_batched_env(name, BatchedEnvSpec(_mujoco(name), dist.name, dist.env_id, horizon=dist.horizon))


_register_mujoco()
