"""CPU physics for N worlds: N MuJoCo simulations stepped in C on threads.

Two engines with one interface (`reset`, `set_world_fields`, `step`, and (N, ...) float64 arrays `qpos`,
`qvel`, `xpos`, `cfrc_ext` read after each call):

* `BatchEngine` (MuJoCo >= 4.0): `mujoco.batch.Batch` keeps each world's integration state (warm start
  included) in a row and steps them on its own C thread pool; one Python call per env step for all worlds,
  bit-identical to stepping one MjData per world. Per-world model fields (randomised dynamics) are
  `Batch.expand`ed fields followed by `set_const`.
* `ThreadEngine` (any MuJoCo >= 3.3): one MjData (and, for randomised dynamics, one MjModel) per world,
  stepped by a pool of Python threads over contiguous chunks; `mj_step` releases the GIL, so the chunks run
  in parallel. The chunk loop is Python, so it is slower per world; it is the fallback for MuJoCo 3.x.

Both reproduce Gymnasium's `do_simulation`: ctrl <- action, `frame_skip` mj_steps, then cfrc_ext as
`mj_rnePostConstraint` gives it.
"""
from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor

import mujoco
import numpy as np


def default_threads() -> int:
    """The usable cores, shared among the processes torchrun started on this machine (LOCAL_WORLD_SIZE)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def has_batch() -> bool:
    """Whether this MuJoCo has `mujoco.batch` (4.0 and later)."""
    if int(mujoco.__version__.split(".")[0]) < 4:
        return False
    try:
        from mujoco import batch  # noqa: F401
    except ImportError:
        return False
    return True


class BatchEngine:
    """N worlds on `mujoco.batch.Batch`.

    It cannot give Gymnasium's cfrc_ext (mj_rnePostConstraint after the step): a sensor that makes mj_step
    compute it gives other numbers (measured on MuJoCo 4.0.0), so robots whose observation or reward uses
    contact forces (Ant) run on `ThreadEngine`.
    """

    cfrc_ext = None

    def __init__(self, model, nworld: int, frame_skip: int, nthread: int | None = None, extra: tuple[str, ...] = (),
                 refresh: bool = False):
        from mujoco.batch import Batch

        self.model, self.nworld, self.frame_skip, self.refresh = model, nworld, frame_skip, refresh
        self.batch = Batch(model, nworld, nthread=nthread or default_threads())
        self._qpos, self._qvel, self._ctrl = (self.batch.bind(f) for f in ("qpos", "qvel", "ctrl"))
        self._xpos = self.batch.bind("xpos")
        for name in extra:  # views of the worlds' data: always current
            setattr(self, name, self.batch.bind(name))

    def set_world_fields(self, fields: dict[str, np.ndarray]) -> None:
        """Give each world its own values of model fields ((N, ...) arrays), then recompute the constants."""
        for name, values in fields.items():
            self.batch.expand(name)[:] = values
        self.batch.set_const()

    def reset(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """mj_resetData, then the given qpos / qvel and mj_forward (Gymnasium's reset + set_state)."""
        self.batch.reset(stage=mujoco.mjtStage.mjSTAGE_NONE)
        self._qpos[:] = qpos
        self._qvel[:] = qvel
        self.batch.forward()

    def step(self, ctrl: np.ndarray, ids: np.ndarray | None = None) -> None:
        self._ctrl[:] = ctrl
        self.batch.step(ids, nstep=self.frame_skip)
        if self.refresh:
            self.batch.forward(ids)

    @property
    def qpos(self) -> np.ndarray:
        return self._qpos

    @property
    def qvel(self) -> np.ndarray:
        return self._qvel

    @property
    def xpos(self) -> np.ndarray:
        return self._xpos

    def close(self) -> None:
        pass


class ThreadEngine:
    """N worlds as N MjData stepped by a pool of Python threads (mj_step releases the GIL)."""

    def __init__(self, model, nworld: int, frame_skip: int, nthread: int | None = None, need_cfrc: bool = False,
                 extra: tuple[str, ...] = (), refresh: bool = False):
        self.model, self.nworld, self.frame_skip, self.need_cfrc = model, nworld, frame_skip, need_cfrc
        self.extra, self.refresh = extra, refresh
        self.models = [model] * nworld  # one per world once set_world_fields gives them their own fields
        self.datas = [mujoco.MjData(model) for _ in range(nworld)]
        nthread = max(1, min(nthread or default_threads(), nworld))
        self.pool = ThreadPoolExecutor(nthread) if nthread > 1 else None
        self.chunks = [c for c in np.array_split(np.arange(nworld), nthread) if len(c)]
        self.qpos = np.zeros((nworld, model.nq))
        self.qvel = np.zeros((nworld, model.nv))
        self.xpos = np.zeros((nworld, model.nbody, 3))
        self.cfrc_ext = np.zeros((nworld, model.nbody, 6)) if need_cfrc else None
        probe = mujoco.MjData(model)
        for name in extra:
            setattr(self, name, np.zeros((nworld, *getattr(probe, name).shape)))
        self._ctrl = np.zeros((nworld, model.nu))
        self._active = np.ones(nworld, dtype=bool)

    def set_world_fields(self, fields: dict[str, np.ndarray]) -> None:
        """Worlds with equal field values (the episodes of one task) share one MjModel copy."""
        models, by_values = [], {}
        for i, d in enumerate(self.datas):
            key = b"".join(values[i].tobytes() for values in fields.values())
            if key not in by_values:
                m = copy.copy(self.model)
                for name, values in fields.items():
                    getattr(m, name)[:] = values[i]
                mujoco.mj_setConst(m, d)  # uses d as scratch: reset() follows
                by_values[key] = m
            models.append(by_values[key])
        self.models = models

    def _read(self, i: int) -> None:
        d = self.datas[i]
        self.qpos[i] = d.qpos
        self.qvel[i] = d.qvel
        self.xpos[i] = d.xpos
        if self.need_cfrc:
            self.cfrc_ext[i] = d.cfrc_ext
        for name in self.extra:
            getattr(self, name)[i] = getattr(d, name)

    def _run(self, fn, ids: np.ndarray | None) -> None:
        chunks = self.chunks if ids is None else [c for c in np.array_split(ids, len(self.chunks)) if len(c)]
        if self.pool is None or len(chunks) == 1:
            for c in chunks:
                fn(c)
        else:
            list(self.pool.map(fn, chunks))

    def reset(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        def work(chunk):
            for i in chunk:
                m, d = self.models[i], self.datas[i]
                mujoco.mj_resetData(m, d)
                d.qpos[:] = qpos[i]
                d.qvel[:] = qvel[i]
                mujoco.mj_forward(m, d)
                self._read(i)

        self._run(work, None)

    def step(self, ctrl: np.ndarray, ids: np.ndarray | None = None) -> None:
        self._ctrl[:] = ctrl

        def work(chunk):
            for i in chunk:
                m, d = self.models[i], self.datas[i]
                d.ctrl[:] = self._ctrl[i]
                mujoco.mj_step(m, d, nstep=self.frame_skip)
                if self.refresh:  # derived quantities of the new state
                    mujoco.mj_forward(m, d)
                if self.need_cfrc:
                    mujoco.mj_rnePostConstraint(m, d)
                self._read(i)

        self._run(work, ids)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)
            self.pool = None


def make_cpu_engine(robot, nworld: int, kind: str = "auto", nthread: int | None = None):
    """`kind`: "batch" (MuJoCo >= 4.0, robots without contact forces in obs/reward), "threads", or "auto"
    (batch where it applies, else threads)."""
    from envs.mujoco.robots import extra_fields, load_model

    need_cfrc = robot.cfrc_in_obs or robot.contact_cost_weight > 0
    more = dict(extra=extra_fields(robot), refresh=robot.refresh)
    if kind == "auto":
        kind = "batch" if has_batch() and not need_cfrc else "threads"
    if kind == "batch":
        if not has_batch():
            raise ValueError(f"the 'batch' CPU engine needs mujoco >= 4.0 (mujoco.batch); installed {mujoco.__version__}")
        if need_cfrc:
            raise ValueError(f"the 'batch' CPU engine cannot give {robot.name}'s contact forces; use 'threads' or 'auto'")
        return BatchEngine(load_model(robot), nworld, robot.frame_skip, nthread, **more)
    if kind == "threads":
        return ThreadEngine(load_model(robot), nworld, robot.frame_skip, nthread, need_cfrc, **more)
    raise ValueError(f"unknown CPU engine {kind!r}; expected one of auto, batch, threads")
