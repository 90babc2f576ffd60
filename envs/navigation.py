"""2D navigation (MAML paper section 5.3; rllab's point env).

A point starts at the origin and must reach a goal drawn uniformly from [-0.5, 0.5]^2. Observation: the
position. Action: a displacement, clipped to [-0.1, 0.1] per coordinate. Reward: minus the distance to the
goal after the move. The episode terminates when the point is within 0.01 of the goal in both coordinates
(rllab's test) and is truncated after H = 100 steps. Split: a checkerboard of 8 x 8 cells over the goal square.

`navigation_step` does the physics of the batched env in torch; the single env does the same float32
operations in the same order in numpy (each correctly rounded in both), so both give bitwise the same numbers
for the same actions (tests/test_navigation.py checks it step for step).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.base import CheckerboardBoxTasks, Split, TaskBatch, TaskDistribution
from envs.batched import TensorDynamicsEnv

GOAL_RANGE = (-0.5, 0.5)
MAX_ACTION = 0.1
GOAL_TOLERANCE = 0.01
HORIZON = 100


class Navigation2DTasks(CheckerboardBoxTasks, TaskDistribution):
    """Goals uniform on [-0.5, 0.5]^2; train and test goals on the two colours of an 8 x 8 checkerboard."""

    name = "Navigation2D"

    def sample(self, n: int, generator: torch.Generator, split: Split = "train") -> TaskBatch:
        u = self.unit_sample(n, 2, generator, split)
        return {"goal": GOAL_RANGE[0] + (GOAL_RANGE[1] - GOAL_RANGE[0]) * u}

    def plot_adaptation(self, trace: dict):
        """Trajectories of a few held-out goals before and after adaptation (trace: metarl.rl.source)."""
        import matplotlib.pyplot as plt

        goals = trace["tasks"]["goal"]
        first, last = trace["steps"][0], trace["steps"][-1]
        fig, axes = plt.subplots(1, goals.shape[0], figsize=(3.2 * goals.shape[0], 3.2), squeeze=False)
        lim = GOAL_RANGE[1] + MAX_ACTION
        for g, ax in enumerate(axes[0]):
            for step, colour, label in ((first, "tab:gray", "before adaptation"), (last, "tab:blue", f"after {last} steps")):
                obs, mask = trace["obs"][step][g], trace["mask"][step][g]
                for e in range(obs.shape[0]):
                    xy = obs[e, : max(int(mask[e].sum()), 1)]
                    ax.plot(xy[:, 0], xy[:, 1], color=colour, alpha=0.7, label=label if e == 0 else None)
            ax.scatter([goals[g, 0]], [goals[g, 1]], marker="*", s=150, color="tab:red", label="goal", zorder=3)
            ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim), ax.set_aspect("equal")
            ax.set_title(f"goal {g}")
        axes[0][0].legend(fontsize=7, loc="lower left")
        return fig


def navigation_step(
    pos: torch.Tensor, goal: torch.Tensor, action: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of every point: (new position, reward, reached) for positions/goals/actions of shape (n, 2)."""
    new_pos = pos + action.clamp(-MAX_ACTION, MAX_ACTION)
    d = new_pos - goal
    # an explicit sum (not linalg.norm) and a float64 sqrt rounded once (torch's float32 sqrt is not correctly
    # rounded), so the numpy single env gets the same bits
    sq = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]
    reward = -torch.sqrt(sq.double()).to(sq.dtype)
    reached = (d.abs() < GOAL_TOLERANCE).all(dim=-1)
    return new_pos, reward, reached


class Navigation2DEnv(gym.Env):
    """One 2D navigation task as a Gymnasium env (registered as `metarl/Navigation2D-v0`, 100 steps).

    The goal comes from `task=` (a TaskBatch of size 1 or {"goal": (x, y)}) or `reset(options={"task": ...})`;
    when neither is given, reset draws one from `Navigation2DTasks` with a generator seeded from the env's
    own seeded RNG.
    """

    metadata = {"render_modes": []}

    def __init__(self, task: TaskBatch | dict[str, Any] | None = None, split: Split = "train"):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-MAX_ACTION, MAX_ACTION, shape=(2,), dtype=np.float32)
        self.split = split
        self._fixed_task = task
        self._goal: np.ndarray | None = None
        self._pos = np.zeros(2, dtype=np.float32)

    @staticmethod
    def _as_goal(task: TaskBatch | dict[str, Any]) -> np.ndarray:
        if "goal" not in task:
            raise KeyError(f"a navigation task needs a 'goal'; got keys {sorted(task)}")
        return torch.as_tensor(task["goal"], dtype=torch.float32).reshape(2).numpy().copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        task = (options or {}).get("task", self._fixed_task)
        if task is None:
            gen = torch.Generator().manual_seed(int(self.np_random.integers(2**62)))
            task = Navigation2DTasks().sample(1, gen, self.split)
        self._goal = self._as_goal(task)
        self._pos = np.zeros(2, dtype=np.float32)
        return self._pos.copy(), {"goal": self._goal.copy()}

    def step(self, action):
        if self._goal is None:
            raise RuntimeError("call reset() before step()")
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(2), np.float32(-MAX_ACTION), np.float32(MAX_ACTION))
        self._pos = self._pos + a
        d = self._pos - self._goal
        reward = -np.sqrt(np.float64(d[0] * d[0] + d[1] * d[1])).astype(np.float32)  # as in navigation_step
        reached = bool(abs(d[0]) < GOAL_TOLERANCE and abs(d[1]) < GOAL_TOLERANCE)
        return self._pos.copy(), float(reward), reached, False, {}


class BatchedNavigation2D(TensorDynamicsEnv):
    """T goals x E episodes of 2D navigation as tensors on one device (see `envs.batched` for the contract).

    Steps after termination leave the point where it is, give reward 0 and report terminated=True. Truncated
    becomes True for every sub-env at step `horizon`. State: position, done flag and goal of every sub-env.
    """

    def __init__(self, num_tasks: int, episodes_per_task: int, horizon: int = HORIZON, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        super().__init__(
            num_tasks, episodes_per_task, horizon,
            gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32),
            gym.spaces.Box(-MAX_ACTION, MAX_ACTION, shape=(2,), dtype=np.float32),
            device,
        )
        self.dtype = dtype
        self.goal = torch.zeros(self.num_envs, 2, device=self.device, dtype=dtype)
        self.state = self._start_state()

    def _start_state(self) -> dict[str, torch.Tensor]:
        # the start state is deterministic (the origin), so a reset's seed has nothing to draw
        return {"pos": torch.zeros(self.num_envs, 2, device=self.device, dtype=self.dtype),
                "done": torch.zeros(self.num_envs, dtype=torch.bool, device=self.device),
                "goal": self.goal}

    def set_tasks(self, tasks: TaskBatch) -> None:
        if "goal" not in tasks:
            raise KeyError(f"navigation tasks need a 'goal'; got keys {sorted(tasks)}")
        goal = tasks["goal"]
        if goal.shape != (self.num_tasks, 2):
            raise ValueError(f"expected goals of shape ({self.num_tasks}, 2), got {tuple(goal.shape)}")
        self.tasks = tasks
        self.goal = self.repeat_per_episode(goal.to(self.dtype))

    def _reset(self, seed: int | None):
        self.state = self._start_state()
        return self.state["pos"], {}

    @staticmethod
    def transition(state: dict[str, torch.Tensor], actions: torch.Tensor):
        pos, done, goal = state["pos"], state["done"], state["goal"]
        new_pos, reward, reached = navigation_step(pos, goal, actions)
        pos = torch.where(done[:, None], pos, new_pos)
        reward = torch.where(done, torch.zeros_like(reward), reward)
        done = done | reached
        return {"pos": pos, "done": done, "goal": goal}, pos, reward, done
