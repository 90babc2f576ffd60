"""The Gymnasium v5 MuJoCo robots, their observations and reward terms, as vectorised numpy functions.

Every function takes arrays with a leading world dimension N (N = 1 for a single env), so the single
Gymnasium env and the batched backends compute observations and rewards with the very same operations
and agree bit for bit. The constants are Gymnasium v5's defaults (half_cheetah_v5.py, ant_v5.py,
hopper_v5.py, walker2d_v5.py); the task-dependent *forward* term is supplied by the task distribution.

terms "maml_paper" (HalfCheetah, Ant): the terms of rllab's envs that the MAML paper's figures came from
(cbfinn/maml_rl, rllab/envs/mujoco/{half_cheetah,ant}_env_rand*.py), on v5's models and frame skips:
  HalfCheetah  obs (qpos[1:], qvel, torso subtree com); reward forward - 0.05 |clip(a)|^2; no termination
  Ant          obs (qpos, qvel, clip(cfrc_ext, -1, 1) of every body, torso xmat, torso subtree com);
               reward forward - 0.005 |clip(a)|^2 - 0.0005 |clip(cfrc_ext)|^2 + 0.05; ends unless 0.2 <= z <= 1
  both         velocity: the torso's centre of mass at the step's end (rllab's get_body_comvel), read after an
               mj_forward of the new state (as rllab's forward_dynamics does); reset noise qpos + N(0, 0.01),
               qvel + N(0, 0.1); clip(a) to [-1, 1] because rllab's `normalize` wrapper clips the rescaled action
               before the env prices it

model "rllab" (Ant, with the paper's terms): rllab's Ant physics on v5's ant.xml, whose geometry, masses and
joints are rllab's: one RK4 step of 0.02 s per action (v5: 5 of 0.01 s), rllab's softer contacts (geom solimp
0.8 0.8 0.01) and rllab's initial pose (the file's `init_qpos` numeric: torso at z 0.55, ankles flexed, which v5
ignores for qpos0). rllab's actions in +-150 on gear-1 motors, normalised to +-1, equal v5's +-1 on gear 150.

The functions accept numpy arrays (CPU backends, single env) or torch tensors (the MuJoCo Warp backend,
on the GPU) and use the matching namespace. No mujoco import here: `load_model` imports it when called.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

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
    main_body: int = 1  # body whose xpos gives Ant's xy velocity (v5); the torso, whose centre of mass the paper's
    terms: str = "v5"
    velocity_from: str = "qpos"  # qpos: root x (v5 HalfCheetah); xpos: main body frame (v5 Ant); com: its centre of mass
    refresh: bool = False  # an mj_forward after the step: every derived quantity describes the new state (rllab)
    ctrl_clip: bool = False  # the control cost of the action clipped to the control range (rllab's HalfCheetah)
    survive_always: bool = False  # healthy_reward on every step, the last one too (rllab's survive_reward)
    cfrc_from_body: int = 1  # v5 leaves the world body's (zero) contact forces out of the observation; rllab not
    obs_xmat: bool = False  # the main body's orientation matrix in the observation (rllab's Ant)
    obs_com: bool = False  # the main body's subtree centre of mass in the observation (rllab)
    model: str = "v5"  # the physics: v5's model file as it is, or with the edits below ("rllab")
    timestep: float | None = None  # the integrator's step instead of the file's
    solimp: tuple[float, ...] | None = None  # every geom's contact impedance instead of the file's
    init_pose: str | None = None  # the model file's <numeric> whose data become qpos0 (reset's mean state)

    @property
    def xml_path(self) -> str:
        import gymnasium

        return os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets", self.xml_file)


HALF_CHEETAH = Robot("half_cheetah", "half_cheetah.xml", 5, 0.1, "normal", 1, None, ctrl_cost_weight=0.1)
ANT = Robot(
    "ant", "ant.xml", 5, 0.1, "normal", 2, None, ctrl_cost_weight=0.5, healthy_reward=1.0,
    contact_cost_weight=5e-4, cfrc_in_obs=True, terminates=True, velocity_from="xpos",
)
HOPPER = Robot("hopper", "hopper.xml", 4, 5e-3, "uniform", 1, 10.0, ctrl_cost_weight=1e-3, healthy_reward=1.0,
               terminates=True)
WALKER2D = Robot("walker2d", "walker2d_v5.xml", 4, 5e-3, "uniform", 1, 10.0, ctrl_cost_weight=1e-3,
                 healthy_reward=1.0, terminates=True)
_PAPER = dict(terms="maml_paper", qvel_noise="rllab", velocity_from="com", refresh=True, obs_com=True)
HALF_CHEETAH_PAPER = Robot("half_cheetah", "half_cheetah.xml", 5, 0.0, skipped_qpos=1, qvel_clip=None,
                           ctrl_cost_weight=0.05, ctrl_clip=True, **_PAPER)
ANT_PAPER = Robot("ant", "ant.xml", 5, 0.0, skipped_qpos=0, qvel_clip=None, ctrl_cost_weight=0.005,
                  ctrl_clip=True, healthy_reward=0.05, survive_always=True, contact_cost_weight=5e-4, cfrc_in_obs=True,
                  cfrc_from_body=0, obs_xmat=True, terminates=True, **_PAPER)
ANT_PAPER_RLLAB = replace(ANT_PAPER, frame_skip=1, model="rllab", timestep=0.02, solimp=(0.8, 0.8, 0.01, 0.5, 2.0),
                          init_pose="init_qpos")
ROBOTS = {(r.name, r.terms, r.model): r
          for r in (HALF_CHEETAH, ANT, HOPPER, WALKER2D, HALF_CHEETAH_PAPER, ANT_PAPER, ANT_PAPER_RLLAB)}
TERMS = ("v5", "maml_paper")
MODELS = ("v5", "rllab")


def robot(name: str, terms: str = "v5", model: str = "v5") -> Robot:
    if (name, terms, model) not in ROBOTS:
        names = sorted({n for n, _, _ in ROBOTS})
        if name not in names:
            raise KeyError(f"unknown robot {name!r}; known: {', '.join(names)}")
        if (name, terms, "v5") not in ROBOTS:
            raise ValueError(f"terms {terms!r} is not defined for {name}: "
                             f"{', '.join(t for n, t, m in ROBOTS if n == name and m == 'v5')}")
        defined = [f"{m} (terms {t})" for n, t, m in ROBOTS if n == name and m != "v5"]
        raise ValueError(f"model {model!r} with terms {terms!r} is not defined for {name}; "
                         f"other models: {', '.join(defined) or 'none'}")
    return ROBOTS[(name, terms, model)]


def route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings to Python's `warnings` instead of its default, which appends them to
    MUJOCO_LOG.TXT in the working directory (e.g. MuJoCo 4's deprecation of Gymnasium's `settotalmass`)."""
    import warnings

    import mujoco

    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(lambda msg: warnings.warn(f"MuJoCo: {msg}", RuntimeWarning, stacklevel=2))


def load_model(r: Robot):
    """The robot's MjModel, compiled from Gymnasium's asset with the robot's edits (timestep, contact impedance,
    initial pose)."""
    import mujoco

    route_mujoco_warnings()
    if r.timestep is None and r.solimp is None and r.init_pose is None:
        return mujoco.MjModel.from_xml_path(r.xml_path)
    spec = mujoco.MjSpec.from_file(r.xml_path)
    if r.timestep is not None:
        spec.option.timestep = r.timestep
    if r.solimp is not None:
        for geom in spec.geoms:
            geom.solimp = list(r.solimp)
    m = spec.compile()
    if r.init_pose is not None:
        m.qpos0[:] = m.numeric(r.init_pose).data
    return m


def observation_size(r: Robot, nq: int, nv: int, nbody: int) -> int:
    return (nq - r.skipped_qpos + nv + (6 * (nbody - r.cfrc_from_body) if r.cfrc_in_obs else 0)
            + 9 * r.obs_xmat + 3 * r.obs_com)


def contact_forces(r: Robot, cfrc_ext: np.ndarray) -> np.ndarray:
    return xp(cfrc_ext).clip(cfrc_ext, r.contact_force_range[0], r.contact_force_range[1])


def observation(r: Robot, qpos: np.ndarray, qvel: np.ndarray, cfrc_ext: np.ndarray | None,
                xmat: np.ndarray | None = None, subtree_com: np.ndarray | None = None) -> np.ndarray:
    """(N, obs_dim) float64: Gymnasium v5's `_get_obs` for N worlds, or rllab's `get_current_obs` (maml_paper)."""
    ns = xp(qpos)
    vel = ns.clip(qvel, -r.qvel_clip, r.qvel_clip) if r.qvel_clip is not None else qvel
    parts = [qpos[:, r.skipped_qpos :], vel]
    if r.cfrc_in_obs:
        parts.append(contact_forces(r, cfrc_ext)[:, r.cfrc_from_body :].reshape(qpos.shape[0], -1))
    if r.obs_xmat:
        parts.append(xmat[:, r.main_body].reshape(qpos.shape[0], 9))
    if r.obs_com:
        parts.append(subtree_com[:, r.main_body])
    return ns.concatenate(parts, axis=1)


def com_velocity(r: Robot, cvel: np.ndarray, xipos: np.ndarray, subtree_com: np.ndarray) -> np.ndarray:
    """(N, 3) linear velocity of the main body's centre of mass, from MuJoCo's com-based body velocities
    (cvel: angular, linear at the subtree com of the body's root; the main body is its own root here): what
    mj_objectVelocity gives rllab's get_body_comvel."""
    b = r.main_body
    w, v, d = cvel[:, b, :3], cvel[:, b, 3:], xipos[:, b] - subtree_com[:, b]
    cross = [w[:, 1] * d[:, 2] - w[:, 2] * d[:, 1], w[:, 2] * d[:, 0] - w[:, 0] * d[:, 2],
             w[:, 0] * d[:, 1] - w[:, 1] * d[:, 0]]
    return v + xp(v).stack(cross, 1)


#: the MjData fields (per world, per body) a robot's terms read besides qpos, qvel, xpos and cfrc_ext
def extra_fields(r: Robot) -> tuple[str, ...]:
    return ("xipos", "cvel", "subtree_com", "xmat") if r.velocity_from == "com" else ()


def control_cost(r: Robot, action: np.ndarray) -> np.ndarray:
    """(N,) in the action's dtype (float32 actions give a float32 cost, as in Gymnasium). The control range of
    both robots is [-1, 1]: rllab's `normalize` clips the action to it (its Ant then divides by the half-width)."""
    ns = xp(action)
    a = ns.clip(action, -1.0, 1.0) if r.ctrl_clip else action
    return r.ctrl_cost_weight * ns.sum(ns.square(a), axis=1)


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


def reward_terms(r: Robot, forward: np.ndarray, action: np.ndarray, healthy: np.ndarray,
                 cfrc_ext: np.ndarray | None) -> dict[str, np.ndarray]:
    """The reward's terms, (N,) each, with their signs: forward, control (<= 0), and where the robot has them
    survive (>= 0) and contact (<= 0); they sum to `total_reward` (up to rounding)."""
    terms = {"forward": forward, "control": -control_cost(r, action)}
    if r.name != "half_cheetah":
        terms["survive"] = r.healthy_reward + 0 * forward if r.survive_always else healthy * r.healthy_reward
    if r.name == "ant":
        terms["contact"] = -contact_cost(r, cfrc_ext)
    return terms


def total_reward(r: Robot, forward: np.ndarray, action: np.ndarray, healthy: np.ndarray,
                 cfrc_ext: np.ndarray | None) -> np.ndarray:
    """Gymnasium v5's reward with the task's forward term, in v5's order of operations."""
    ctrl = control_cost(r, action)
    if r.name == "half_cheetah":
        return forward - ctrl
    rewards = forward + (r.healthy_reward if r.survive_always else healthy * r.healthy_reward)  # 0 / 1: exact
    if r.name == "ant":
        return rewards - (ctrl + contact_cost(r, cfrc_ext))
    return rewards - ctrl


def reset_noise(r: Robot, rng: np.random.Generator, nq: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """The v5 `reset_model` noise for one world, drawn from rng in v5's order (qpos first); rllab's
    (maml_paper): qpos + N(0, 0.01), qvel + N(0, 0.1)."""
    dq, dv = reset_noise_batch(r, rng, 1, nq, nv)
    return dq[0], dv[0]


def reset_noise_batch(r: Robot, rng: np.random.Generator, n: int, nq: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """The same law for n worlds in two vectorised draws."""
    if r.qvel_noise == "rllab":
        return 0.01 * rng.standard_normal((n, nq)), 0.1 * rng.standard_normal((n, nv))
    s = r.reset_noise_scale
    dq = rng.uniform(low=-s, high=s, size=(n, nq))
    dv = s * rng.standard_normal((n, nv)) if r.qvel_noise == "normal" else rng.uniform(low=-s, high=s, size=(n, nv))
    return dq, dv
