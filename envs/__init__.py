"""Task distributions and environments of metarl.

Importing this package registers every task family (`envs.registry`) and its Gymnasium env id
(`metarl/<Name>-v0`). `family(name)` finds one by name; `make_distribution(name, **options)` builds its task
distribution; `make_batched_env(name, T, E, H)` its batched env (RL families).
"""
from __future__ import annotations

import os
from functools import partial

import torch

from envs.base import TaskBatch, TaskDistribution, checkerboard_split
from envs.mujoco import BACKENDS, MUJOCO_TASKS, make_batched, single_env_entry_point
from envs.navigation import HORIZON as NAV_HORIZON
from envs.navigation import Navigation2DTasks
from envs.noisy_omniglot import NoisyOmniglotTasks
from envs.omniglot import OmniglotTasks
from envs.registry import TaskFamily, family, known, make_batched_env, make_distribution, register
from envs.sinusoid import SinusoidTasks
from envs.supervised import Episode, SupervisedTaskDistribution, SupervisedTaskEnv


def _one_torch_thread() -> None:
    torch.set_num_threads(1)


# A process forked after torch ran OpenMP work hangs in its first parallel op (the OpenMP thread pool does
# not survive fork), and Gymnasium's AsyncVectorEnv forks its workers by default: one torch thread in a
# forked child avoids the pool (each worker is one env; the parent keeps its threads).
os.register_at_fork(after_in_child=_one_torch_thread)


def _metaworld(dist, num_tasks, episodes_per_task, horizon, device="cpu", **kw):
    from envs.meta_world import make_batched as make_metaworld

    return make_metaworld(dist, num_tasks, episodes_per_task, horizon, device=device, **kw)


def _metaworld_tasks(benchmark: str):
    def factory(**options):
        from envs import meta_world

        return (meta_world.ml1_tasks if benchmark == "ML1" else meta_world.ml10_tasks)(**options)
    return factory


def _metaworld_single(**kw):
    from envs.meta_world import single_env

    return single_env(**kw)


def _navigation(dist, num_tasks, episodes_per_task, horizon, device="cpu", **kw):
    from envs.navigation import BatchedNavigation2D

    return BatchedNavigation2D(num_tasks, episodes_per_task, horizon, device=device, **kw)


for _dist in (SinusoidTasks, OmniglotTasks, NoisyOmniglotTasks):
    register(TaskFamily(_dist.name, _dist, partial(SupervisedTaskEnv, factory=_dist)))
register(TaskFamily("Navigation2D", Navigation2DTasks, "envs.navigation:Navigation2DEnv", NAV_HORIZON, _navigation))
for _dist in MUJOCO_TASKS:
    register(TaskFamily(_dist.name, _dist, single_env_entry_point(_dist), _dist.horizon, make_batched, BACKENDS))
# Meta-World: the optional extra (pip install -e .[metaworld]); registered always, imported on first use
for _bench in ("ML1", "ML10"):
    register(TaskFamily(f"MetaWorld{_bench}", _metaworld_tasks(_bench),
                        partial(_metaworld_single, benchmark=_bench), 500, _metaworld))

__all__ = [
    "Episode",
    "SinusoidTasks",
    "SupervisedTaskDistribution",
    "SupervisedTaskEnv",
    "TaskBatch",
    "TaskDistribution",
    "TaskFamily",
    "checkerboard_split",
    "family",
    "known",
    "make_batched_env",
    "make_distribution",
]
