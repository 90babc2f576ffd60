"""MuJoCo task distributions (HalfCheetah / Ant velocity, direction, goal; randomised dynamics for HalfCheetah,
Hopper, Walker2d), their single Gymnasium envs and batched backends (CPU threads, MuJoCo Warp).

Importing this package does not import mujoco: the task distributions are plain torch, the env ids are
registered by entry-point strings, and the backends import mujoco (or mujoco_warp) when built.
"""
from __future__ import annotations

from envs.mujoco.tasks import (
    HORIZON,
    MUJOCO_TASKS,
    AntDirTasks,
    AntGoalTasks,
    AntVelTasks,
    HalfCheetahDirTasks,
    HalfCheetahRandParamsTasks,
    HalfCheetahVelTasks,
    HopperRandParamsTasks,
    MujocoTasks,
    RandParamsTasks,
    Walker2dRandParamsTasks,
)

#: Physics backends of the batched MuJoCo envs (see envs.mujoco.batched.BatchedMujocoEnv).
BACKENDS = ("auto", "cpu", "cpu-batch", "cpu-threads", "warp")


def make_batched(distribution: MujocoTasks, num_tasks: int, episodes_per_task: int, horizon: int, device="cpu", **kw):
    """The batched env of a MuJoCo task distribution (imports mujoco only now)."""
    from envs.mujoco.batched import BatchedMujocoEnv

    return BatchedMujocoEnv(distribution, num_tasks, episodes_per_task, horizon, device=device, **kw)


def single_env_entry_point(dist: type[MujocoTasks]) -> str:
    return f"envs.mujoco.single:{dist.__name__.replace('Tasks', 'Env')}"


__all__ = [
    "AntDirTasks", "AntGoalTasks", "AntVelTasks", "BACKENDS", "HORIZON", "HalfCheetahDirTasks",
    "HalfCheetahRandParamsTasks", "HalfCheetahVelTasks", "HopperRandParamsTasks", "MUJOCO_TASKS", "MujocoTasks",
    "RandParamsTasks", "Walker2dRandParamsTasks", "make_batched", "single_env_entry_point",
]
