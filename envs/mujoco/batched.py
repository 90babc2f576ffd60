"""Batched MuJoCo task envs on the `envs.batched` contract: T tasks x E episodes as one set of worlds.

The physics runs in a backend (`cpu`: `envs.mujoco.cpu_backend`, C threads; `warp`: MuJoCo Warp on a CUDA
device, `envs.mujoco.warp_backend`); observations and rewards are assembled for all worlds at once with the
functions the single env uses (`envs.mujoco.robots`), so for the same task, start state and actions the CPU
backend gives exactly the single Gymnasium env's numbers.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.base import TaskBatch
from envs.batched import BatchedTaskEnv
from envs.mujoco import robots as R
from envs.mujoco.tasks import HORIZON, RAND_FIELDS, MujocoTasks

BACKENDS = ("auto", "cpu", "cpu-batch", "cpu-threads", "warp")


def warp_available() -> bool:
    """CUDA present and mujoco_warp importable: the condition for backend="auto" to choose warp."""
    if not torch.cuda.is_available():
        return False
    try:
        import mujoco_warp  # noqa: F401
    except ImportError:
        return False
    return True


class BatchedMujocoEnv(BatchedTaskEnv):
    """T tasks x E episodes of a MuJoCo task distribution (see `envs.batched` for the contract).

    backend: "auto" (warp when CUDA and mujoco_warp are there, else cpu), "cpu" (mujoco.batch when
    MuJoCo >= 4.0, else a thread pool), "cpu-batch", "cpu-threads", or "warp". num_threads: CPU threads
    (default: all usable cores). reset(options={"init_qpos": (N, nq), "init_qvel": (N, nv)}) starts the
    worlds from given states instead of Gymnasium's reset noise (drawn from `seed`).
    """

    def __init__(self, tasks: MujocoTasks, num_tasks: int, episodes_per_task: int, horizon: int = HORIZON,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, backend: str = "auto",
                 num_threads: int | None = None, seed: int | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if backend == "auto":
            backend = "warp" if warp_available() else "cpu"
        self.backend = backend
        self.task_distribution = tasks
        self.robot = tasks.robot
        n = num_tasks * episodes_per_task
        if backend == "warp":
            from envs.mujoco.warp_backend import WarpEngine

            if device == "cpu":
                device = "cuda"
            self.engine = WarpEngine(self.robot, n, device=device)
        else:
            from envs.mujoco.cpu_backend import make_cpu_engine

            kind = {"cpu": "auto", "cpu-batch": "batch", "cpu-threads": "threads"}[backend]
            self.engine = make_cpu_engine(self.robot, n, kind, num_threads)
        m = self.engine.model if hasattr(self.engine, "model") else self.engine.base_model
        self.nq, self.nv, self.nu, self.nbody = m.nq, m.nv, m.nu, m.nbody
        self.dt = m.opt.timestep * self.robot.frame_skip
        self.init_qpos, self.init_qvel = m.qpos0.copy(), np.zeros(m.nv)
        self._default_fields = {f: getattr(m, f).copy() for f in RAND_FIELDS}
        ctrl = m.actuator_ctrlrange.astype(np.float32)
        obs_size = R.observation_size(self.robot, self.nq, self.nv, self.nbody)
        super().__init__(num_tasks, episodes_per_task, horizon,
                         gym.spaces.Box(-np.inf, np.inf, shape=(obs_size,), dtype=np.float64),
                         gym.spaces.Box(ctrl[:, 0], ctrl[:, 1], dtype=np.float32), device)
        self.dtype = dtype
        self._rng = np.random.default_rng(seed)
        self._params: dict[str, np.ndarray] = {}
        self._done = np.zeros(n, dtype=bool)
        self._obs = np.zeros((n, obs_size))
        self._init_state: tuple[np.ndarray, np.ndarray] | None = None

    def set_tasks(self, tasks: TaskBatch) -> None:
        params = self.task_distribution.params_numpy(tasks)
        for k, v in params.items():
            if v.shape[0] != self.num_tasks:
                raise ValueError(f"expected {self.num_tasks} tasks, got {k!r} of shape {tuple(tasks[k].shape)}")
        self.tasks = tasks
        self._params = {k: np.repeat(v, self.episodes_per_task, axis=0) for k, v in params.items()}
        if self.task_distribution.randomises_dynamics:
            self.engine.set_world_fields({f: self._default_fields[f] * self._params[f] for f in RAND_FIELDS})

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        options = options or {}
        self._init_state = None
        if "init_qpos" in options or "init_qvel" in options:
            self._init_state = (np.asarray(options["init_qpos"], dtype=np.float64).reshape(self.num_envs, self.nq),
                                np.asarray(options["init_qvel"], dtype=np.float64).reshape(self.num_envs, self.nv))
        return super().reset(seed=seed, options=options)

    def _reset(self, seed: int | None):
        if self._init_state is not None:
            qpos, qvel = self._init_state
        else:
            rng = np.random.default_rng(seed) if seed is not None else self._rng
            dq, dv = R.reset_noise_batch(self.robot, rng, self.num_envs, self.nq, self.nv)
            qpos, qvel = self.init_qpos + dq, self.init_qvel + dv
        self.engine.reset(qpos, qvel)
        self._done[:] = False
        self._obs = self._observation()
        return self._to_torch(self._obs), {}

    def _observation(self) -> np.ndarray:
        e = self.engine
        return R.observation(self.robot, e.qpos, e.qvel, e.cfrc_ext if self.robot.cfrc_in_obs else None)

    def _to_torch(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device=self.device, dtype=self.dtype)

    def _step(self, actions: torch.Tensor):
        a = actions.detach().to("cpu", torch.float32).numpy()  # float32, as the single env sees it
        e, body = self.engine, self.robot.main_body
        xy_before = e.xpos[:, body, :2].copy()
        x_before = e.qpos[:, 0].copy()
        running = ~self._done
        e.step(a.astype(np.float64), None if running.all() else np.flatnonzero(running))
        xy_after = e.xpos[:, body, :2]
        xy_velocity = (xy_after - xy_before) / self.dt
        x_velocity = xy_velocity[:, 0] if self.robot.name == "ant" else (e.qpos[:, 0] - x_before) / self.dt
        forward = self.task_distribution.forward_term(self._params, x_velocity, xy_velocity, xy_after)
        healthy = R.is_healthy(self.robot, e.qpos, e.qvel)
        reward = R.total_reward(self.robot, forward, a, healthy, e.cfrc_ext if self.robot.name == "ant" else None)
        obs = self._observation()
        # finished episodes keep their last observation and earn nothing until the next reset
        reward = np.where(self._done, 0.0, reward)
        obs[self._done] = self._obs[self._done]
        if self.robot.terminates:
            self._done |= ~healthy
        self._obs = obs
        truncated = np.full(self.num_envs, self.t >= self.horizon)
        done = torch.from_numpy(self._done.copy()).to(self.device)
        return self._to_torch(obs), self._to_torch(reward), done, torch.from_numpy(truncated).to(self.device), {}

    def close(self, **kwargs: Any) -> None:
        self.engine.close()


def batched_factory(name: str):
    """factory(num_tasks, episodes_per_task, horizon, device=..., **kw) for `envs.batched_registry`."""
    from envs.mujoco import BATCHED_NAMES

    dist = BATCHED_NAMES[name]

    def make(num_tasks: int, episodes_per_task: int, horizon: int, device="cpu", **kw: Any) -> BatchedMujocoEnv:
        return BatchedMujocoEnv(dist(), num_tasks, episodes_per_task, horizon, device=device, **kw)

    return make
