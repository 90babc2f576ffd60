"""Sinusoid regression (MAML paper, section 5.1).

Task parameters: amplitude A ~ U[0.1, 5], phase b ~ U[0, pi]. Inputs x ~ U[-5, 5]; target y = A sin(x - b);
loss: mean squared error. Split: a checkerboard of 8 x 8 cells over the normalised (A, b) square.
"""
from __future__ import annotations

import math

import torch

from envs.base import CheckerboardBoxTasks, Split, TaskBatch, check_positive
from envs.supervised import Data, SupervisedTaskDistribution

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


class SinusoidTasks(CheckerboardBoxTasks, SupervisedTaskDistribution):
    name = "Sinusoid"
    loss = "mse"
    input_shape = (1,)
    output_dim = 1
    input_range = X_RANGE
    prediction_range = (-10.0, 10.0)

    def sample(self, n: int, generator: torch.Generator, split: Split = "train") -> TaskBatch:
        u = self.unit_sample(n, 2, generator, split)
        amplitude = AMPLITUDE[0] + (AMPLITUDE[1] - AMPLITUDE[0]) * u[:, 0]
        phase = PHASE[0] + (PHASE[1] - PHASE[0]) * u[:, 1]
        return {"amplitude": amplitude, "phase": phase}

    @staticmethod
    def target(tasks: TaskBatch, x: torch.Tensor) -> torch.Tensor:
        """The true function of each task at x of shape (tasks, k, 1)."""
        return tasks["amplitude"][:, None, None] * torch.sin(x - tasks["phase"][:, None, None])

    def sample_data(self, tasks: TaskBatch, k: int, generator: torch.Generator, split: Split = "train") -> Data:
        check_positive(k=k)
        n = tasks["amplitude"].shape[0]
        x = X_RANGE[0] + (X_RANGE[1] - X_RANGE[0]) * torch.rand(n, k, 1, generator=generator, dtype=self.dtype)
        return x, self.target(tasks, x).to(self.dtype)

    def sample_support_query(self, tasks: TaskBatch, k_support: int, k_query: int, generator: torch.Generator,
                             split: Split) -> tuple[Data, Data]:
        # One draw for both sets (same law as two draws): fewer small ops on the training hot path.
        x, y = self.sample_data(tasks, k_support + k_query, generator, split)
        return (x[:, :k_support], y[:, :k_support]), (x[:, k_support:], y[:, k_support:])

    def plot_adaptation(self, trace: dict):
        """A few held-out tasks: the true curve, the support points and the learner's fit after some steps
        (trace: see metarl.supervised.source.SupervisedSource.trace)."""
        import matplotlib.pyplot as plt

        tasks, (sx, sy) = trace["tasks"], trace["support"]
        n = sx.shape[0]
        xs = torch.linspace(*X_RANGE, 200, dtype=sx.dtype)[None, :, None].expand(n, 200, 1)
        truth = self.target(tasks, xs)
        fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.4), squeeze=False)
        for i, ax in enumerate(axes[0]):
            ax.plot(xs[i, :, 0], truth[i, :, 0], "k-", lw=2, label="true")
            for step in trace["steps"]:
                ax.plot(xs[i, :, 0], trace["predict"](step, xs)[i, :, 0], "--", label=f"{step} steps")
            ax.plot(sx[i, :, 0], sy[i, :, 0], "r^", ms=8, label="support")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        return fig
