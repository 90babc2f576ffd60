"""Task distributions and environments of metarl.

Importing this package registers every Gymnasium env id of the project (all under the `metarl/` namespace).
`make_task_distribution(name, **kwargs)` builds a task distribution by its registry name.
"""
from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym

from envs.base import TaskBatch, TaskDistribution, checkerboard_split
from envs.sinusoid import SinusoidTasks
from envs.supervised import Episode, SupervisedTaskDistribution

_DISTRIBUTIONS: dict[str, Callable[..., TaskDistribution]] = {}


def register_task_distribution(name: str, factory: Callable[..., TaskDistribution]) -> None:
    _DISTRIBUTIONS[name] = factory


def known_task_distributions() -> list[str]:
    return sorted(_DISTRIBUTIONS)


def make_task_distribution(name: str, **kwargs: Any) -> TaskDistribution:
    """Build a task distribution by name; an unknown name raises KeyError listing the known ones."""
    if name not in _DISTRIBUTIONS:
        raise KeyError(f"unknown task distribution {name!r}; known: {', '.join(known_task_distributions())}")
    return _DISTRIBUTIONS[name](**kwargs)


def _register_env(env_id: str, entry_point: str, **kwargs: Any) -> None:
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=entry_point, **kwargs)


register_task_distribution("sinusoid", SinusoidTasks)
_register_env("metarl/Sinusoid-v0", "envs.sinusoid:SinusoidEnv")  # H = 1: terminates itself

from envs.navigation import Navigation2DTasks  # noqa: E402

register_task_distribution("navigation2d", Navigation2DTasks)
_register_env("metarl/Navigation2D-v0", "envs.navigation:Navigation2DEnv", max_episode_steps=100)

from envs.omniglot import OmniglotTasks  # noqa: E402

register_task_distribution("omniglot", OmniglotTasks)
_register_env("metarl/Omniglot-v0", "envs.omniglot:OmniglotEnv", max_episode_steps=1)

from envs.mujoco import MUJOCO_TASKS, single_env_entry_point  # noqa: E402  (imports no mujoco)

for _dist in MUJOCO_TASKS:
    register_task_distribution(_dist.name, _dist)
    _register_env(_dist.env_id, single_env_entry_point(_dist), max_episode_steps=_dist.horizon)

__all__ = [
    "Episode",
    "SinusoidTasks",
    "SupervisedTaskDistribution",
    "TaskBatch",
    "TaskDistribution",
    "checkerboard_split",
    "known_task_distributions",
    "make_task_distribution",
    "register_task_distribution",
]
