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

from envs.mujoco import BACKENDS


def _copy(x):
    return x.clone() if isinstance(x, torch.Tensor) else x.copy()


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
        self.steps_on_own_threads = backend != "warp"
        self.task_distribution = tasks
        self.robot = tasks.robot
        n = num_tasks * episodes_per_task
        if backend == "warp":
            from envs.mujoco.warp_backend import WarpEngine

            self.engine = WarpEngine(self.robot, n, device=device)  # device cpu: Warp's CPU device (tests)
        else:
            from envs.mujoco.cpu_backend import make_cpu_engine

            kind = {"cpu": "auto", "cpu-batch": "batch", "cpu-threads": "threads"}[backend]
            self.engine = make_cpu_engine(self.robot, n, kind, num_threads)
        m = self.engine.model  # the nominal MjModel: sizes, defaults, timestep
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
        self._on_torch = backend == "warp"  # the engine's arrays are torch tensors on its device
        self._engine_device = torch.device(device) if self._on_torch else torch.device("cpu")
        self._rng = np.random.default_rng(seed)
        self._params: dict = {}
        self._done = torch.zeros(n, dtype=torch.bool, device=self._engine_device) if self._on_torch else np.zeros(n, bool)
        self._obs = None
        self._init_state: tuple[np.ndarray, np.ndarray] | None = None
        self._term_sums: dict = {}  # reward term -> (N,) sum over the episode so far

    def set_tasks(self, tasks: TaskBatch) -> None:
        params = self.task_distribution.params_numpy(tasks)
        for k, v in params.items():
            if v.shape[0] != self.num_tasks:
                raise ValueError(f"expected {self.num_tasks} tasks, got {k!r} of shape {tuple(tasks[k].shape)}")
        self.tasks = tasks
        per_world = {k: np.repeat(v, self.episodes_per_task, axis=0) for k, v in params.items()}
        if self.task_distribution.randomises_dynamics:
            self.engine.set_world_fields({f: self._default_fields[f] * per_world[f] for f in RAND_FIELDS})
        if self._on_torch:
            per_world = {k: torch.as_tensor(v, dtype=torch.float32, device=self._engine_device) for k, v in per_world.items()}
        self._params = per_world

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
            first, total = self.worlds  # drawn for the whole batch: each world as in one process
            dq, dv = (x[first : first + self.num_envs] for x in R.reset_noise_batch(self.robot, rng, total, self.nq, self.nv))
            qpos, qvel = self.init_qpos + dq, self.init_qvel + dv
        if self._on_torch:
            qpos, qvel = (torch.as_tensor(x, dtype=torch.float32, device=self._engine_device) for x in (qpos, qvel))
        self.engine.reset(qpos, qvel)
        self._done = torch.zeros_like(self._done) if self._on_torch else np.zeros_like(self._done)
        self._term_sums = {}
        self._obs = self._observation()
        return self._to_torch(self._obs), {}

    def _observation(self) -> np.ndarray:
        e, r = self.engine, self.robot
        return R.observation(r, e.qpos, e.qvel, e.cfrc_ext if r.cfrc_in_obs else None, getattr(e, "xmat", None),
                             getattr(e, "subtree_com", None))

    def _to_torch(self, x, keep_dtype: bool = False) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        return t.to(device=self.device) if keep_dtype else t.to(device=self.device, dtype=self.dtype)

    def _step(self, actions: torch.Tensor):
        e, body = self.engine, self.robot.main_body
        if self._on_torch:  # the Warp backend: everything stays on the device
            a = actions.detach().to(self._engine_device, torch.float32)
        else:
            a = actions.detach().to("cpu", torch.float32).numpy()  # float32, as the single env sees it
        xy_before = _copy(e.xpos[:, body, :2])
        x_before = _copy(e.qpos[:, 0])
        running = ~self._done
        if self._on_torch:
            e.step(a)  # every world steps; finished ones are masked below
        else:
            e.step(a.astype(np.float64), None if running.all() else np.flatnonzero(running))
        xy_after = e.xpos[:, body, :2]
        xy_velocity = (xy_after - xy_before) / self.dt
        x_velocity = xy_velocity[:, 0] if self.robot.velocity_from == "xpos" else (e.qpos[:, 0] - x_before) / self.dt
        if self.robot.velocity_from == "com":  # the paper's terms: the torso's centre of mass, at the step's end
            xy_velocity = R.com_velocity(self.robot, e.cvel, e.xipos, e.subtree_com)[:, :2]
            x_velocity, xy_after = xy_velocity[:, 0], e.subtree_com[:, body, :2]
        forward = self.task_distribution.forward_term(self._params, x_velocity, xy_velocity, xy_after)
        healthy = R.is_healthy(self.robot, e.qpos, e.qvel)
        reward = R.total_reward(self.robot, forward, a, healthy, e.cfrc_ext if self.robot.name == "ant" else None)
        obs = self._observation()
        # finished episodes keep their last observation and earn nothing until the next reset
        reward = R.xp(reward).where(self._done, 0.0, reward)
        for name, term in R.reward_terms(self.robot, forward, a, healthy, e.cfrc_ext if self.robot.name == "ant" else None).items():
            self._term_sums[name] = self._term_sums.get(name, 0.0) + R.xp(reward).where(self._done, 0.0, term)
        obs[self._done] = self._obs[self._done]
        if self.robot.terminates:
            self._done |= ~healthy
        self._obs = obs
        done = self._to_torch(self._done, keep_dtype=True).clone()
        truncated = torch.full_like(done, self.t >= self.horizon)
        return self._to_torch(obs), self._to_torch(reward), done, truncated, {}

    @property
    def episode_reward_terms(self) -> dict[str, torch.Tensor]:
        """Each reward term summed over the current episode so far, (N,) per term (`robots.reward_terms`)."""
        return {k: self._to_torch(v, keep_dtype=True).to(torch.float64) for k, v in self._term_sums.items()}

    def close(self, **kwargs: Any) -> None:
        self.engine.close()
