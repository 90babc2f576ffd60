"""Single Gymnasium envs of the MuJoCo task distributions (registered as metarl/<Name>-v0, H = 200).

Each is Gymnasium's `MujocoEnv` on the v5 model (or rllab's Ant physics, option model="rllab"), with v5's reset
noise, observation and reward terms (from `envs.mujoco.robots`) and the task's forward term or physics (from
`envs.mujoco.tasks`). The task comes from `task=` at construction or `reset(options={"task": ...})`; when
neither is given, reset draws one from the task distribution with a generator seeded from the env's own seeded RNG.
"""
from __future__ import annotations

from typing import Any

import mujoco
import numpy as np
import torch
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from gymnasium.spaces import Box

from envs.base import Split, TaskBatch
from envs.mujoco import robots as R
from envs.mujoco import tasks as T


class MujocoTaskEnv(MujocoEnv):
    """One task of a MuJoCo task distribution as a Gymnasium env. Subclasses set `task_distribution`."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"]}
    task_distribution: type[T.MujocoTasks] = T.MujocoTasks

    def __init__(self, task: TaskBatch | dict[str, Any] | None = None, split: Split = "train",
                 render_mode: str | None = None, terms: str = "v5", model: str = "v5", **kwargs: Any):
        options = {k: v for k, v in (("terms", terms), ("model", model)) if v != "v5"}
        self.tasks = self.task_distribution(**options)
        self.robot = self.tasks.robot
        R.route_mujoco_warnings()
        MujocoEnv.__init__(self, self.robot.xml_path, self.robot.frame_skip, observation_space=None,
                           render_mode=render_mode, **kwargs)
        self.metadata = {**self.metadata, "render_fps": int(np.round(1.0 / self.dt))}
        size = R.observation_size(self.robot, self.model.nq, self.model.nv, self.model.nbody)
        self.observation_space = Box(low=-np.inf, high=np.inf, shape=(size,), dtype=np.float64)
        self.split = split
        self._fixed_task = task
        self._reset_task: TaskBatch | dict[str, Any] | None = None
        self.task: dict[str, np.ndarray] | None = None
        self._default_fields = {f: getattr(self.model, f).copy() for f in T.RAND_FIELDS}

    def _initialize_simulation(self):
        """The robot's model with its edits (`robots.load_model`), not the bare file Gymnasium would load."""
        model = R.load_model(self.robot)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)  # as Gymnasium's: render size
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def _set_task(self, task: TaskBatch | dict[str, Any]) -> None:
        params = self.tasks.params_numpy(task, n=1)
        self.task = params  # each value with a leading dim of 1
        if self.tasks.randomises_dynamics:
            for f in T.RAND_FIELDS:
                getattr(self.model, f)[:] = self._default_fields[f] * params[f][0]
            mujoco.mj_setConst(self.model, self.data)  # derived constants follow the new masses
            mujoco.mj_resetData(self.model, self.data)  # mj_setConst used data as scratch

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._reset_task = (options or {}).get("task", self._fixed_task)
        return super().reset(seed=seed, options=options)

    def reset_model(self):
        task = self._reset_task
        if task is None:
            gen = torch.Generator().manual_seed(int(self.np_random.integers(2**62)))
            task = self.tasks.sample(1, gen, self.split)
        self._set_task(task)
        dq, dv = R.reset_noise(self.robot, self.np_random, self.model.nq, self.model.nv)
        self.set_state(self.init_qpos + dq, self.init_qvel + dv)
        return self._get_obs()

    def _get_reset_info(self) -> dict[str, Any]:
        return {"task": {k: v[0].copy() for k, v in (self.task or {}).items()}}

    def _get_obs(self) -> np.ndarray:
        d = self.data
        cfrc = d.cfrc_ext[None] if self.robot.cfrc_in_obs else None
        return R.observation(self.robot, d.qpos[None], d.qvel[None], cfrc, d.xmat[None], d.subtree_com[None])[0]

    def step(self, action):
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float32).reshape(1, -1)
        body = self.robot.main_body
        xy_before = self.data.xpos[body, :2].copy()
        x_before = self.data.qpos[0]
        self.do_simulation(a[0], self.frame_skip)
        if self.robot.refresh:  # derived quantities of the new state (rllab's forward_dynamics)
            mujoco.mj_forward(self.model, self.data)
            if self.robot.cfrc_in_obs or self.robot.contact_cost_weight > 0:
                mujoco.mj_rnePostConstraint(self.model, self.data)
        xy_after = self.data.xpos[body, :2].copy()
        xy_velocity = ((xy_after - xy_before) / self.dt)[None]
        if self.robot.velocity_from == "xpos":
            x_velocity = xy_velocity[:, 0]
        else:
            x_velocity = np.array([(self.data.qpos[0] - x_before) / self.dt])
        if self.robot.velocity_from == "com":
            d = self.data
            xy_velocity = R.com_velocity(self.robot, d.cvel[None], d.xipos[None], d.subtree_com[None])[:, :2]
            x_velocity, xy_after = xy_velocity[:, 0], d.subtree_com[body, :2].copy()
        qpos, qvel = self.data.qpos[None], self.data.qvel[None]
        cfrc = self.data.cfrc_ext[None] if self.robot.contact_cost_weight > 0 else None
        forward = self.tasks.forward_term(self.task, x_velocity, xy_velocity, xy_after.reshape(1, 2))
        healthy = R.is_healthy(self.robot, qpos, qvel)
        reward = R.total_reward(self.robot, forward, a, healthy, cfrc)
        terminated = bool(self.robot.terminates and not healthy[0])
        info = {"x_velocity": float(x_velocity[0]), "forward_reward": float(forward[0]), "x_position": float(qpos[0, 0])}
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), float(reward[0]), terminated, False, info


def _env_class(dist: type[T.MujocoTasks]) -> type[MujocoTaskEnv]:
    cls_name = dist.__name__.replace("Tasks", "Env")
    doc = f"`{dist.name}` as a single Gymnasium env ({dist.env_id}). " + (dist.__doc__ or "")
    return type(cls_name, (MujocoTaskEnv,), {"task_distribution": dist, "__doc__": doc, "__module__": __name__})


HalfCheetahVelEnv = _env_class(T.HalfCheetahVelTasks)
HalfCheetahDirEnv = _env_class(T.HalfCheetahDirTasks)
AntVelEnv = _env_class(T.AntVelTasks)
AntDirEnv = _env_class(T.AntDirTasks)
AntGoalEnv = _env_class(T.AntGoalTasks)
HalfCheetahRandParamsEnv = _env_class(T.HalfCheetahRandParamsTasks)
HopperRandParamsEnv = _env_class(T.HopperRandParamsTasks)
Walker2dRandParamsEnv = _env_class(T.Walker2dRandParamsTasks)
