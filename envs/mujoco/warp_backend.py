"""Physics for N worlds with MuJoCo Warp (`mujoco_warp`), exchanged with torch without copies.

nworld = T x E worlds live on one device. `qpos`, `qvel`, `xpos`, `cfrc_ext` are torch views of the Warp
arrays (`warp.to_torch`, zero-copy), so the batched env assembles observations and rewards with torch on the
device. One env step is ctrl <- action, frame_skip x `mujoco_warp.step`, then `rne_postconstraint` where the
robot needs contact forces; on CUDA it is captured once as a CUDA graph and replayed. Randomised dynamics give
the model fields a leading world dimension (MuJoCo Warp broadcasts model fields whose first dimension is 1),
and the fields `set_const` derives from them (subtree masses, inverse weights) one row per world too.

device "cpu" runs the same engine on Warp's CPU device, launching the kernels at every step instead of
replaying a graph: for tests and debugging (CI checks the physics against the CPU backend this way), not speed.
CUDA graphs, streams and throughput are what only a GPU can check (`pytest -m gpu`, scripts/gpu_check.sh).

Imported only when the "warp" backend is chosen, so the default install needs neither warp nor mujoco_warp.
Physics run in float32: results match the CPU backend within float32 tolerance, not bit for bit (contacts
amplify the difference: trajectories part at the first contact, while statistics over many worlds agree).
"""
from __future__ import annotations

import contextlib

import mujoco
import numpy as np
import torch

try:
    import mujoco_warp as mjw
    import warp as wp
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the 'warp' backend needs mujoco_warp and warp-lang (pip install 'metarl[warp]')"
    ) from exc

from envs.mujoco.robots import Robot, extra_fields, load_model


#: model fields that mujoco_warp.set_const derives from others: each gets one row per world before it runs (it
#: computes as many worlds as a field has rows, so a field left with one would give every world world 0's)
DERIVED_FIELDS = ("body_subtreemass", "dof_invweight0", "body_invweight0", "tendon_invweight0", "actuator_acc0",
                  "geom_aabb", "geom_rbound", "tendon_length0")


class WarpEngine:
    """N worlds of one robot on MuJoCo Warp; arrays are torch tensors on `device` (cuda, or cpu for tests)."""

    def __init__(self, robot: Robot, nworld: int, device: str | torch.device = "cuda",
                 nconmax: int | None = None, njmax: int | None = None):
        self.device = torch.device(device)
        if self.device.type not in ("cuda", "cpu"):
            raise ValueError(f"the warp backend runs on a CUDA device or Warp's CPU device, got {self.device}")
        self.robot, self.nworld, self.frame_skip = robot, nworld, robot.frame_skip
        self.need_cfrc = robot.cfrc_in_obs or robot.contact_cost_weight > 0
        self.model = load_model(robot)  # the CPU model: sizes, defaults, timestep
        self._cuda = self.device.type == "cuda"
        self._wp_device = f"cuda:{self.device.index or 0}" if self._cuda else "cpu"
        with wp.ScopedDevice(self._wp_device):
            mjd = mujoco.MjData(self.model)
            mujoco.mj_forward(self.model, mjd)
            self.m = mjw.put_model(self.model)
            kwargs = {k: v for k, v in (("nconmax", nconmax), ("njmax", njmax)) if v is not None}
            self.d = mjw.put_data(self.model, mjd, nworld=nworld, **kwargs)
        self._bind()
        self._graph = None
        # CUDA: the physics run on a stream of their own (graph capture refuses the legacy default stream, which
        # is torch's current stream unless the caller chose another), ordered with torch's current stream both
        # ways on entry and exit (`_physics_stream`)
        self._torch_stream = torch.cuda.Stream(self.device) if self._cuda else None
        self._stream = wp.stream_from_torch(self._torch_stream) if self._cuda else None
        if self._cuda:
            wp.synchronize_device(self._wp_device)  # put_model / put_data copies done before torch reads

    def _bind(self) -> None:
        d = self.d
        self.qpos, self.qvel, self.ctrl = wp.to_torch(d.qpos), wp.to_torch(d.qvel), wp.to_torch(d.ctrl)
        self.xpos = wp.to_torch(d.xpos)  # (N, nbody, 3)
        self.cfrc_ext = wp.to_torch(d.cfrc_ext) if self.need_cfrc else None  # (N, nbody, 6)
        for name in extra_fields(self.robot):  # (N, nbody, ...): xipos, cvel, subtree_com, xmat
            t = wp.to_torch(getattr(d, name))
            setattr(self, name, t.reshape(*t.shape[:2], -1) if name == "xmat" else t)

    def set_world_fields(self, fields: dict[str, np.ndarray]) -> None:
        """Per-world values of model fields ((N, ...) arrays), and of the constants derived from them (subtree
        masses, inverse weights: mujoco_warp.set_const); the captured step is re-captured."""
        with self._physics_stream():
            for name, values in fields.items():
                old = getattr(self.m, name)
                setattr(self.m, name, wp.array(np.ascontiguousarray(values, dtype=np.float32), dtype=old.dtype))
            for name in DERIVED_FIELDS:
                old = getattr(self.m, name, None)
                if old is not None and old.ndim >= 1 and old.shape[0] == 1 and self.nworld > 1:
                    rows = np.repeat(old.numpy(), self.nworld, axis=0)
                    setattr(self.m, name, wp.array(rows, dtype=old.dtype))
            mjw.set_const(self.m, self.d)
            if self._cuda:  # the replaced arrays are freed now: nothing queued may still read them
                wp.synchronize_stream(self._stream)
        self._graph = None

    @contextlib.contextmanager
    def _physics_stream(self):
        """Warp work inside runs after the torch work queued before it, and torch work queued after it runs after
        the Warp work (CUDA); on Warp's CPU device everything is synchronous."""
        if not self._cuda:
            with wp.ScopedDevice(self._wp_device):
                yield
            return
        caller = torch.cuda.current_stream(self.device)
        self._torch_stream.wait_stream(caller)
        with wp.ScopedStream(self._stream):
            yield
        caller.wait_stream(self._torch_stream)

    def reset(self, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        with self._physics_stream():
            mjw.reset_data(self.m, self.d)
        self.qpos.copy_(qpos)  # torch, on the caller's stream: after reset_data, before forward
        self.qvel.copy_(qvel)
        with self._physics_stream():
            mjw.forward(self.m, self.d)

    def _physics(self) -> None:
        for _ in range(self.frame_skip):
            mjw.step(self.m, self.d)
        if self.robot.refresh:  # derived quantities of the new state
            mjw.forward(self.m, self.d)
        if self.need_cfrc:
            mjw.rne_postconstraint(self.m, self.d)

    def step(self, ctrl: torch.Tensor, ids=None) -> None:
        """All worlds advance (a GPU step costs the same for a subset); `ids` is accepted and ignored."""
        self.ctrl.copy_(ctrl)
        with self._physics_stream():
            if not self._cuda:  # Warp's CPU device: launch the kernels (no graphs there)
                self._physics()
                return
            if self._graph is None:
                self._physics()  # compiles the kernels; graph capture needs them loaded
                with wp.ScopedCapture() as capture:
                    self._physics()
                self._graph = capture.graph
                return  # the capture ran nothing: the first (uncaptured) call did this step's physics
            wp.capture_launch(self._graph)

    def close(self) -> None:
        self._graph = None
