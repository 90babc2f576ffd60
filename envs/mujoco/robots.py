"""The Gymnasium v5 MuJoCo robots, their observations and reward terms, as vectorised numpy functions.

Every function takes arrays with a leading world dimension N (N = 1 for a single env), so the single
Gymnasium env and the batched backends compute observations and rewards with the very same operations
and agree bit for bit. The constants are Gymnasium v5's defaults (half_cheetah_v5.py, ant_v5.py,
hopper_v5.py, walker2d_v5.py); the task-dependent *forward* term is supplied by the task distribution.

The functions accept numpy arrays (CPU backends, single env) or torch tensors (the MuJoCo Warp backend,
on the GPU) and use the matching namespace. No mujoco import here: `load_model` imports it when called.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch


def xp(x):
    """The array namespace of x: numpy for ndarrays, torch for tensors (their functions used here agree)."""
    return torch if isinstance(x, torch.Tensor) else np


@dataclass(frozen=True)
class Robot:
    """One Gymnasium v5 MuJoCo robot: model file, frame skip, observation layout and reward constants."""

    name: str
    xml_file: str
    frame_skip: int
    reset_noise_scale: float
    qvel_noise: str  # "normal" (HalfCheetah, Ant) or "uniform" (Hopper, Walker2d), as in v5 reset_model
    skipped_qpos: int  # leading qpos entries left out of the observation (x, or x and y)
    qvel_clip: float | None  # Hopper / Walker2d clip velocities in the observation
    ctrl_cost_weight: float
    healthy_reward: float = 0.0
    contact_cost_weight: float = 0.0
    contact_force_range: tuple[float, float] = (-1.0, 1.0)
    cfrc_in_obs: bool = False
    terminates: bool = False
    main_body: int = 1  # body whose xpos gives Ant's xy velocity

    @property
    def xml_path(self) -> str:
        import gymnasium

        return os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", self.xml_file)


HALF_CHEETAH = Robot("half_cheetah", "half_cheetah.xml", 5, 0.1, "normal", 1, None, ctrl_cost_weight=0.1)
ANT = Robot(
    "ant", "ant.xml", 5, 0.1, "normal", 2, None, ctrl_cost_weight=0.5, healthy_reward=1.0,
    contact_cost_weight=5e-4, cfrc_in_obs=True, terminates=True,
)
HOPPER = Robot("hopper", "hopper.xml", 4, 5e-3, "uniform", 1, 10.0, ctrl_cost_weight=1e-3, healthy_reward=1.0,
               terminates=True)
WALKER2D = Robot("walker2d", "walker2d_v5.xml", 4, 5e-3, "uniform", 1, 10.0, ctrl_cost_weight=1e-3,
                 healthy_reward=1.0, terminates=True)
ROBOTS = {r.name: r for r in (HALF_CHEETAH, ANT, HOPPER, WALKER2D)}


def robot(name: str) -> Robot:
    if name not in ROBOTS:
        raise KeyError(f"unknown robot {name!r}; known: {', '.join(sorted(ROBOTS))}")
    return ROBOTS[name]


def route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings to Python's `warnings` instead of its default, which appends them to
    MUJOCO_LOG.TXT in the working directory (e.g. MuJoCo 4's deprecation of Gymnasium's `settotalmass`)."""
    import warnings

    import mujoco

    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(lambda msg: warnings.warn(f"MuJoCo: {msg}", RuntimeWarning, stacklevel=2))


def load_model(r: Robot):
    """The robot's MjModel, compiled from Gymnasium's asset."""
    import mujoco

    route_mujoco_warnings()
    return mujoco.MjModel.from_xml_path(r.xml_path)


def observation_size(r: Robot, nq: int, nv: int, nbody: int) -> int:
    return nq - r.skipped_qpos + nv + (6 * (nbody - 1) if r.cfrc_in_obs else 0)


def contact_forces(r: Robot, cfrc_ext: np.ndarray) -> np.ndarray:
    return xp(cfrc_ext).clip(cfrc_ext, r.contact_force_range[0], r.contact_force_range[1])


def observation(r: Robot, qpos: np.ndarray, qvel: np.ndarray, cfrc_ext: np.ndarray | None) -> np.ndarray:
    """(N, obs_dim) float64, Gymnasium v5's `_get_obs` for N worlds."""
    ns = xp(qpos)
    vel = ns.clip(qvel, -r.qvel_clip, r.qvel_clip) if r.qvel_clip is not None else qvel
    parts = [qpos[:, r.skipped_qpos :], vel]
    if r.cfrc_in_obs:
        parts.append(contact_forces(r, cfrc_ext)[:, 1:].reshape(qpos.shape[0], -1))
    return ns.concatenate(parts, axis=1)


def control_cost(r: Robot, action: np.ndarray) -> np.ndarray:
    """(N,) in the action's dtype (float32 actions give a float32 cost, as in Gymnasium)."""
    ns = xp(action)
    return r.ctrl_cost_weight * ns.sum(ns.square(action), axis=1)


def contact_cost(r: Robot, cfrc_ext: np.ndarray) -> np.ndarray:
    n, ns = cfrc_ext.shape[0], xp(cfrc_ext)
    return r.contact_cost_weight * ns.sum(ns.square(contact_forces(r, cfrc_ext)).reshape(n, -1), axis=1)


def is_healthy(r: Robot, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """(N,) bool: Gymnasium v5's `is_healthy` of each world (always True for HalfCheetah)."""
    ns = xp(qpos)
    if r.name == "ant":  # finite state and 0.2 <= z <= 1.0
        finite = ns.isfinite(qpos).all(axis=1) & ns.isfinite(qvel).all(axis=1)
        return finite & (0.2 <= qpos[:, 2]) & (qpos[:, 2] <= 1.0)
    if r.name == "hopper":  # |state[2:]| < 100, z > 0.7, |angle| < 0.2 (strict)
        state = ns.concatenate([qpos[:, 2:], qvel], axis=1)
        ok_state = ((-100.0 < state) & (state < 100.0)).all(axis=1)
        return ok_state & (0.7 < qpos[:, 1]) & (qpos[:, 1] < np.inf) & (-0.2 < qpos[:, 2]) & (qpos[:, 2] < 0.2)
    if r.name == "walker2d":  # 0.8 < z < 2, -1 < angle < 1
        return (0.8 < qpos[:, 1]) & (qpos[:, 1] < 2.0) & (-1.0 < qpos[:, 2]) & (qpos[:, 2] < 1.0)
    return qpos[:, 0] == qpos[:, 0]  # all True (NaN aside), in qpos's namespace and device


def total_reward(r: Robot, forward: np.ndarray, action: np.ndarray, healthy: np.ndarray,
                 cfrc_ext: np.ndarray | None) -> np.ndarray:
    """Gymnasium v5's reward with the task's forward term, in v5's order of operations."""
    ctrl = control_cost(r, action)
    if r.name == "half_cheetah":
        return forward - ctrl
    rewards = forward + healthy * r.healthy_reward  # healthy is 0 or 1: exact in any float dtype
    if r.name == "ant":
        return rewards - (ctrl + contact_cost(r, cfrc_ext))
    return rewards - ctrl


def reset_noise(r: Robot, rng: np.random.Generator, nq: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """The v5 `reset_model` noise for one world, drawn from rng in v5's order (qpos first)."""
    s = r.reset_noise_scale
    dq = rng.uniform(low=-s, high=s, size=nq)
    dv = s * rng.standard_normal(nv) if r.qvel_noise == "normal" else rng.uniform(low=-s, high=s, size=nv)
    return dq, dv


def reset_noise_batch(r: Robot, rng: np.random.Generator, n: int, nq: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """The same law for n worlds in two vectorised draws (a different stream from n calls of reset_noise)."""
    s = r.reset_noise_scale
    dq = rng.uniform(low=-s, high=s, size=(n, nq))
    dv = s * rng.standard_normal((n, nv)) if r.qvel_noise == "normal" else rng.uniform(low=-s, high=s, size=(n, nv))
    return dq, dv
