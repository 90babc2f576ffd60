"""GPU physics for N worlds with MuJoCo Warp (`mujoco_warp`), exchanged with torch without copies.

nworld = T x E worlds live on one CUDA device. `qpos`, `qvel`, `xpos`, `cfrc_ext` are torch views of the
Warp arrays (`warp.to_torch`, zero-copy), so the batched env assembles observations and rewards with torch on
the device. One env step (ctrl <- action, frame_skip x `mujoco_warp.step`, then `rne_postconstraint` where
the robot needs contact forces) is captured once as a CUDA graph and replayed. Randomised dynamics give the
model fields a leading world dimension (MuJoCo Warp broadcasts model fields whose first dimension is 1).

Imported only when the "warp" backend is chosen, so a CPU install needs neither warp nor mujoco_warp.
Physics run in float32: results match the CPU backend within float32 tolerance, not bit for bit.

NOT YET RUN ON A GPU: written against the mujoco_warp API (put_model / put_data / step / forward /
reset_data / rne_postconstraint / set_const) without a device to test it on; see tests/test_mujoco_warp.py.
"""
from __future__ import annotations

import mujoco
import numpy as np
import torch

try:
    import mujoco_warp as mjw
    import warp as wp
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the 'warp' backend needs mujoco_warp and warp-lang (pip install 'metarl[gpu]') and a CUDA device"
    ) from exc

from envs.mujoco.robots import Robot, load_model


class WarpEngine:
    """N worlds of one robot on MuJoCo Warp; arrays are torch tensors on `device`."""

    def __init__(self, robot: Robot, nworld: int, device: str | torch.device = "cuda",
                 nconmax: int | None = None, njmax: int | None = None):
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"the warp backend runs on a CUDA device, got {self.device}")
        self.robot, self.nworld, self.frame_skip = robot, nworld, robot.frame_skip
        self.need_cfrc = robot.cfrc_in_obs or robot.contact_cost_weight > 0
        self.model = load_model(robot)  # the CPU model: sizes, defaults, timestep
        self._wp_device = f"cuda:{self.device.index or 0}"
        with wp.ScopedDevice(self._wp_device):
            mjd = mujoco.MjData(self.model)
            mujoco.mj_forward(self.model, mjd)
            self.m = mjw.put_model(self.model)
            kwargs = {k: v for k, v in (("nconmax", nconmax), ("njmax", njmax)) if v is not None}
            self.d = mjw.put_data(self.model, mjd, nworld=nworld, **kwargs)
        self._bind()
        self._graph = None
        # warp launches on torch's current stream, so torch reads and writes are ordered with the physics
        self._stream = wp.stream_from_torch(torch.cuda.current_stream(self.device))

    def _bind(self) -> None:
        d = self.d
        self.qpos, self.qvel, self.ctrl = wp.to_torch(d.qpos), wp.to_torch(d.qvel), wp.to_torch(d.ctrl)
        self.xpos = wp.to_torch(d.xpos)  # (N, nbody, 3)
        self.cfrc_ext = wp.to_torch(d.cfrc_ext) if self.need_cfrc else None  # (N, nbody, 6)

    def set_world_fields(self, fields: dict[str, np.ndarray]) -> None:
        """Per-world values of model fields ((N, ...) arrays); the captured step is re-captured."""
        with wp.ScopedDevice(self._wp_device):
            for name, values in fields.items():
                old = getattr(self.m, name)
                setattr(self.m, name, wp.array(np.ascontiguousarray(values, dtype=np.float32), dtype=old.dtype))
            if hasattr(mjw, "set_const"):  # derived constants (subtree masses, invweights) follow the fields
                mjw.set_const(self.m, self.d)
        self._graph = None

    def reset(self, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        with wp.ScopedStream(self._stream):
            mjw.reset_data(self.m, self.d)
            self.qpos.copy_(qpos)
            self.qvel.copy_(qvel)
            mjw.forward(self.m, self.d)

    def _physics(self) -> None:
        for _ in range(self.frame_skip):
            mjw.step(self.m, self.d)
        if self.need_cfrc:
            mjw.rne_postconstraint(self.m, self.d)

    def step(self, ctrl: torch.Tensor, ids=None) -> None:
        """All worlds advance (a GPU step costs the same for a subset); `ids` is accepted and ignored."""
        self.ctrl.copy_(ctrl)
        with wp.ScopedStream(self._stream):
            if self._graph is None:
                self._physics()  # compiles the kernels; graph capture needs them loaded
                with wp.ScopedCapture() as capture:
                    self._physics()
                self._graph = capture.graph
                return  # the capture ran nothing: the first (uncaptured) call did this step's physics
            wp.capture_launch(self._graph)

    def close(self) -> None:
        self._graph = None
