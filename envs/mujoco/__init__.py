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

#: Batched-env names (for `envs.batched_registry.make_batched_env`) -> task distribution class.
BATCHED_NAMES: dict[str, type[MujocoTasks]] = {
    "HalfCheetahVel": HalfCheetahVelTasks,
    "HalfCheetahDir": HalfCheetahDirTasks,
    "AntVel": AntVelTasks,
    "AntDir": AntDirTasks,
    "AntGoal": AntGoalTasks,
    "HalfCheetahRandParams": HalfCheetahRandParamsTasks,
    "HopperRandParams": HopperRandParamsTasks,
    "Walker2dRandParams": Walker2dRandParamsTasks,
}


def single_env_entry_point(dist: type[MujocoTasks]) -> str:
    return f"envs.mujoco.single:{dist.__name__.replace('Tasks', 'Env')}"


__all__ = [
    "AntDirTasks", "AntGoalTasks", "AntVelTasks", "BATCHED_NAMES", "HORIZON", "HalfCheetahDirTasks",
    "HalfCheetahRandParamsTasks", "HalfCheetahVelTasks", "HopperRandParamsTasks", "MUJOCO_TASKS", "MujocoTasks",
    "RandParamsTasks", "Walker2dRandParamsTasks", "single_env_entry_point",
]
