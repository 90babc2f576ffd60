"""Reptile for RL: k policy-gradient steps per task, each on fresh rollouts of the current task policy, then
theta <- theta + epsilon * (mean_i phi_i - theta). No gradient flows through the inner loop."""
from __future__ import annotations

import torch
from torch import nn

from metarl.rl.maml_rl import Collect, adapt_per_task
from metarl.rl.objective import RLObjective
from metarl.rl.policy import Params, expand_params


class ReptileRL:
    """Reptile with an RL inner loop (inner_steps >= 1 policy-gradient steps, outer step size epsilon)."""

    def __init__(self, policy: nn.Module, init_params: Params, inner_lr: float = 0.1, inner_steps: int = 3,
                 epsilon: float = 0.5, estimator: str = "reinforce"):
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be at least 1, got {inner_steps}")
        if not 0 < epsilon <= 1:
            raise ValueError(f"epsilon must be in (0, 1], got {epsilon}")
        self.objective = RLObjective(policy, estimator)
        self._init = {k: v.detach().clone() for k, v in init_params.items()}
        self.inner_lr, self.inner_steps, self.epsilon = float(inner_lr), int(inner_steps), float(epsilon)

    def init_params(self) -> Params:
        return {k: v.clone() for k, v in self._init.items()}

    def adaptation(self, meta: Params) -> tuple[Params, float]:
        """(policy parameters, step size): what an inner step starts from and uses."""
        return meta, self.inner_lr

    def step_size(self, lr: float, step: int) -> float:
        """The step size of inner step `step`: the same for every step."""
        return lr

    def iteration(self, theta: Params, num_tasks: int, collect: Collect) -> tuple[Params, dict[str, float]]:
        phi = expand_params(theta, num_tasks)
        returns = []
        for step in range(self.inner_steps):
            data, ret = collect(theta if step == 0 else phi)
            returns.append(ret)
            phi = adapt_per_task(self.objective, phi, data, self.inner_lr)
        with torch.no_grad():
            new = {k: theta[k] + self.epsilon * (phi[k].mean(0) - theta[k]) for k in theta}
        return new, {"return_pre": returns[0], "return_post": returns[-1]}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
