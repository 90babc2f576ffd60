"""MuJoCo task distributions: task parameters as tensors, and the forward term each task puts in the reward.

Reward-function tasks (MAML paper, section 5.3) keep Gymnasium v5's model and reward terms and replace the
forward term:
  HalfCheetahVel  velocity v* ~ U[0, 2]      forward = -|v_x - v*|
  HalfCheetahDir  direction d in {-1, +1}    forward = d * v_x
  AntVel          velocity v* ~ U[0, 3]      forward = -|v_x - v*|  (+ velocity_offset, an option)
  AntDir          direction d in {-1, +1}    forward = d * v_x
  AntGoal         goal g uniform in the disc of radius 3   forward = -||xy - g||
Transition tasks (randomised dynamics, as in rand_param_envs / ProMP) keep the v5 reward and scale the
model's body_mass, body_inertia, dof_damping and geom_friction, element by element, by 1.5^U(-3, 3).

Option terms "maml_paper" (HalfCheetah and Ant families; envs.mujoco.robots): the reward terms, termination, reset
noise and observation of the rllab envs the MAML paper's figures came from, with their forward terms: velocity
and direction from the torso's centre of mass; AntVel forward = 1 - |v_x - v*| (rllab: "make it happy, not
suicidal"); AntGoal forward = 4 - |xy - g|_1 (rllab's), xy the torso's subtree centre of mass.
Option model "rllab" (Ant families, with terms maml_paper): rllab's Ant physics (timestep, contacts, initial
pose; envs.mujoco.robots) instead of v5's.

Splits: continuous parameters use the checkerboard split of `envs.base` (train and test cover the whole
range, disjoint). The direction tasks have only two tasks, so both splits hold both directions, as in the
MAML paper which evaluates on the same two.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from envs.base import Split, TaskBatch, TaskDistribution, check_positive, check_split, checkerboard_split
from envs.mujoco.robots import MODELS, TERMS, Robot, robot, xp

HORIZON = 200
RAND_FIELDS = ("body_mass", "body_inertia", "dof_damping", "geom_friction")


class MujocoTasks(TaskDistribution):
    """Base class: a task distribution over one Gymnasium v5 MuJoCo robot.

    Subclasses set `robot_name`, `name`, `env_id`, implement `sample`, and `forward_term` (reward-function
    tasks) or `model_scales` (transition tasks).
    """

    robot_name = ""
    horizon = HORIZON
    #: True when tasks change the physics (per-world model fields) rather than the reward.
    randomises_dynamics = False

    def __init__(self, split_cells: int = 8, terms: str = "v5", dtype: torch.dtype = torch.float32,
                 model: str = "v5"):
        check_positive(split_cells=split_cells)
        if terms not in TERMS:
            raise ValueError(f"terms must be one of {', '.join(TERMS)}, got {terms!r}")
        if model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
        self.split_cells, self.terms, self.model, self.dtype = split_cells, terms, model, dtype
        if self.robot_name:  # a combination the robots do not define fails here, when the options are read
            robot(self.robot_name, terms, model)

    @property
    def robot(self) -> Robot:
        return robot(self.robot_name, self.terms, self.model)

    @property
    def paper(self) -> bool:
        return self.terms == "maml_paper"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each task parameter's shape, without the leading task dimension."""
        raise NotImplementedError

    def params_numpy(self, tasks: TaskBatch | dict, n: int | None = None) -> dict[str, np.ndarray]:
        """Task parameters as float64 arrays with a leading dim (n, or whatever the tensors have); a missing
        key raises KeyError naming the expected ones."""
        shapes = self.param_shapes()
        missing = sorted(set(shapes) - set(tasks))
        if missing:
            raise KeyError(f"{self.name} tasks need {sorted(shapes)}; missing {missing}")
        out = {}
        for k, shape in shapes.items():
            v = torch.as_tensor(tasks[k]).detach().cpu().to(torch.float64).numpy()
            out[k] = v.reshape(-1 if n is None else n, *shape)
        return out

    def forward_term(self, params: dict[str, np.ndarray], x_velocity: np.ndarray, xy_velocity: np.ndarray,
                     xy_position: np.ndarray) -> np.ndarray:
        """The task's forward reward for N worlds, params with leading dim N (numpy float64, or torch tensors)."""
        return x_velocity  # v5's forward_reward_weight (1.0) * x_velocity

    def _uniform(self, n: int, d: int, generator: torch.Generator, split: Split) -> torch.Tensor:
        check_positive(tasks=n)
        check_split(split)
        u = torch.rand(n, d, generator=generator, dtype=torch.float64)
        return checkerboard_split(u, split, self.split_cells)


class _VelocityTasks(MujocoTasks):
    """forward = velocity_offset - |v_x - v*|. The offset (default 0, the MAML paper's term) is there for robots
    that terminate: with v5's terms an AntVel step is worth less than nothing for most targets until the ant runs
    near them, so ending episodes early pays; an offset (1.0 in pytorch-maml-rl's AntVel) moves the balance towards
    surviving, but alone does not outweigh v5's control cost early in training."""

    max_velocity = 2.0
    #: the forward term's constant with the paper's terms (rllab's AntVel: +1, "make it happy, not suicidal")
    paper_offset = 0.0

    def __init__(self, split_cells: int = 8, velocity_offset: float = 0.0, terms: str = "v5",
                 dtype: torch.dtype = torch.float32, model: str = "v5"):
        super().__init__(split_cells, terms, dtype, model)
        if not math.isfinite(velocity_offset):
            raise ValueError(f"velocity_offset must be a finite number, got {velocity_offset}")
        if velocity_offset and self.paper:
            raise ValueError("velocity_offset is an option of the v5 terms; terms maml_paper has the paper's own")
        self.velocity_offset = float(velocity_offset) + (self.paper_offset if self.paper else 0.0)

    def sample(self, n: int, generator: torch.Generator, split: Split = "train") -> TaskBatch:
        u = self._uniform(n, 1, generator, split)[:, 0]
        return {"velocity": (self.max_velocity * u).to(self.dtype)}

    def param_shapes(self):
        return {"velocity": ()}

    def forward_term(self, params, x_velocity, xy_velocity, xy_position):
        return self.velocity_offset - abs(x_velocity - params["velocity"])


class _DirectionTasks(MujocoTasks):
    def sample(self, n: int, generator: torch.Generator, split: Split = "train") -> TaskBatch:
        check_positive(tasks=n)
        check_split(split)
        bits = torch.randint(0, 2, (n,), generator=generator)
        return {"direction": (2 * bits - 1).to(self.dtype)}

    def param_shapes(self):
        return {"direction": ()}

    def forward_term(self, params, x_velocity, xy_velocity, xy_position):
        return params["direction"] * x_velocity


class HalfCheetahVelTasks(_VelocityTasks):
    """HalfCheetah running at a target velocity v* ~ U[0, 2] (MAML paper)."""

    name = "HalfCheetahVel"
    env_id = "metarl/HalfCheetahVel-v0"
    robot_name = "half_cheetah"
    max_velocity = 2.0


class HalfCheetahDirTasks(_DirectionTasks):
    """HalfCheetah running forward (+1) or backward (-1) (MAML paper)."""

    name = "HalfCheetahDir"
    env_id = "metarl/HalfCheetahDir-v0"
    robot_name = "half_cheetah"


class AntVelTasks(_VelocityTasks):
    """Ant running at a target velocity v* ~ U[0, 3] (MAML paper)."""

    name = "AntVel"
    env_id = "metarl/AntVel-v0"
    robot_name = "ant"
    max_velocity = 3.0
    paper_offset = 1.0


class AntDirTasks(_DirectionTasks):
    """Ant running forward (+1) or backward (-1) (MAML paper)."""

    name = "AntDir"
    env_id = "metarl/AntDir-v0"
    robot_name = "ant"


class AntGoalTasks(MujocoTasks):
    """Ant walking to a goal drawn uniformly from the disc of radius 3 (forward = -||xy - goal||)."""

    name = "AntGoal"
    env_id = "metarl/AntGoal-v0"
    robot_name = "ant"
    radius = 3.0

    def sample(self, n: int, generator: torch.Generator, split: Split = "train") -> TaskBatch:
        u = self._uniform(n, 2, generator, split)
        r = self.radius * torch.sqrt(u[:, 0])  # sqrt: uniform over the disc's area
        theta = 2 * math.pi * u[:, 1]
        return {"goal": torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1).to(self.dtype)}

    def param_shapes(self):
        return {"goal": (2,)}

    def forward_term(self, params, x_velocity, xy_velocity, xy_position):
        d = xy_position - params["goal"]
        if self.paper:  # rllab's: 4 - L1 distance
            return 4.0 - (abs(d[:, 0]) + abs(d[:, 1]))
        return -xp(d).sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])


class RandParamsTasks(MujocoTasks):
    """Randomised dynamics: each entry of body_mass, body_inertia, dof_damping and geom_friction is scaled by
    1.5^u with u ~ U[-3, 3]. Task parameters are the scale factors, shaped like the model fields."""

    randomises_dynamics = True
    log_scale_base = 1.5
    log_scale_range = 3.0

    def __init__(self, split_cells: int = 8, dtype: torch.dtype = torch.float32):
        super().__init__(split_cells, "v5", dtype)
        self._shapes: dict[str, tuple[int, ...]] | None = None

    def field_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the scaled model fields (loads the model once; needs mujoco)."""
        if self._shapes is None:
            from envs.mujoco.robots import load_model

            m = load_model(self.robot)
            self._shapes = {f: tuple(getattr(m, f).shape) for f in RAND_FIELDS}
        return self._shapes

    def param_shapes(self):
        return self.field_shapes()

    def sample(self, n: int, generator: torch.Generator, split: Split = "train") -> TaskBatch:
        shapes = self.field_shapes()
        sizes = [int(np.prod(s)) for s in shapes.values()]
        u = self._uniform(n, sum(sizes), generator, split)
        exponent = self.log_scale_range * (2 * u - 1)
        scales = torch.pow(torch.tensor(self.log_scale_base, dtype=torch.float64), exponent)
        out, start = {}, 0
        for (field, shape), size in zip(shapes.items(), sizes):
            out[field] = scales[:, start : start + size].reshape(n, *shape)  # float64: applied to float64 fields
            start += size
        return out


class HalfCheetahRandParamsTasks(RandParamsTasks):
    name = "HalfCheetahRandParams"
    env_id = "metarl/HalfCheetahRandParams-v0"
    robot_name = "half_cheetah"


class HopperRandParamsTasks(RandParamsTasks):
    name = "HopperRandParams"
    env_id = "metarl/HopperRandParams-v0"
    robot_name = "hopper"


class Walker2dRandParamsTasks(RandParamsTasks):
    name = "Walker2dRandParams"
    env_id = "metarl/Walker2dRandParams-v0"
    robot_name = "walker2d"


MUJOCO_TASKS: tuple[type[MujocoTasks], ...] = (
    HalfCheetahVelTasks, HalfCheetahDirTasks, AntVelTasks, AntDirTasks, AntGoalTasks,
    HalfCheetahRandParamsTasks, HopperRandParamsTasks, Walker2dRandParamsTasks,
)
