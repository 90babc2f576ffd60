"""The one name registry: a task family's name -> its task distribution, Gymnasium id, horizon and batched env.

    family("Navigation2D")                 the family. Names match ignoring case, "_" and "-", and the
                                           Gymnasium id works too: "navigation2d", "metarl/Navigation2D-v0"
    make_distribution("Omniglot", ways=5)  its task distribution
    make_batched_env("HalfCheetahVel", T, E, H, device=...)   its batched env (RL families)

Every family's single Gymnasium env is registered as `metarl/<name>-v0` (H = 1 for supervised families).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym

from envs.base import TaskDistribution


@dataclass(frozen=True)
class TaskFamily:
    name: str
    """The name configs use (task.name), e.g. Sinusoid, Omniglot, Navigation2D, HalfCheetahVel."""
    distribution: Callable[..., TaskDistribution]
    """factory(**options) -> the task distribution."""
    env_entry_point: Any
    """The single Gymnasium env's entry point (a string or a callable)."""
    horizon: int = 1
    """Default episode length H (1: a supervised family)."""
    batched_env: Callable[..., Any] | None = None
    """RL families: factory(distribution, num_tasks, episodes_per_task, horizon, device=..., **kw)."""
    backends: tuple[str, ...] = ()
    """Physics backends the batched env accepts as `backend=` (MuJoCo); empty: none to choose."""

    @property
    def env_id(self) -> str:
        return f"metarl/{self.name}-v0"

    @property
    def is_rl(self) -> bool:
        return self.batched_env is not None


_FAMILIES: dict[str, TaskFamily] = {}


def _key(name: str) -> str:
    name = name.strip()
    if name.startswith("metarl/") and name.endswith("-v0"):
        name = name[len("metarl/"):-len("-v0")]
    return name.lower().replace("_", "").replace("-", "")


def register(family: TaskFamily) -> None:
    _FAMILIES[_key(family.name)] = family
    if family.env_id not in gym.registry:  # an H = 1 env terminates itself: no time limit to add
        gym.register(id=family.env_id, entry_point=family.env_entry_point,
                     max_episode_steps=family.horizon if family.horizon > 1 else None)


def known() -> list[str]:
    return sorted(f.name for f in _FAMILIES.values())


def family(name: str) -> TaskFamily:
    """The family called `name`; an unknown name raises KeyError listing the known ones."""
    try:
        return _FAMILIES[_key(name)]
    except KeyError:
        raise KeyError(f"unknown task family {name!r}; known: {', '.join(known())}") from None


def make_distribution(name: str, **options: Any) -> TaskDistribution:
    return family(name).distribution(**options)


def make_batched_env(name: str, num_tasks: int, episodes_per_task: int, horizon: int | None = None,
                     device: Any = "cpu", distribution: TaskDistribution | None = None, **kw: Any):
    """The batched env of RL family `name` for num_tasks x episodes_per_task sub-envs (horizon: the default)."""
    fam = family(name)
    if fam.batched_env is None:
        raise KeyError(f"{fam.name} is a supervised (H = 1) family: it has no batched env")
    dist = distribution if distribution is not None else fam.distribution()
    return fam.batched_env(dist, num_tasks, episodes_per_task, horizon or fam.horizon, device=device, **kw)
