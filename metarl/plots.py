"""Figures a person would rather look at than read: adaptation curves and what the learner does on tasks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def plot_adaptation_curve(ax, summary: dict[str, Any], metric: str) -> None:
    steps = summary["steps"]
    mean = summary[metric]["mean"]
    ci = summary[metric]["ci95"]
    ax.errorbar(steps, mean, yerr=ci, marker="o", capsize=3)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel(f"held-out query {metric}")
    ax.set_title(f"{summary['num_tasks']} held-out tasks, mean and 95% CI")
    ax.grid(alpha=0.3)
    if metric == "loss" and min(mean) > 0 and max(mean) / min(mean) > 20:
        ax.set_yscale("log")


def plot_regression_fits(axes, xs: torch.Tensor, truth: torch.Tensor, preds: dict[int, torch.Tensor],
                         support: tuple[torch.Tensor, torch.Tensor]) -> None:
    """One axis per task: true curve, support points, predictions after the given numbers of steps."""
    for i, ax in enumerate(axes):
        ax.plot(xs[i, :, 0], truth[i, :, 0], "k-", lw=2, label="true")
        for steps, pred in preds.items():
            ax.plot(xs[i, :, 0], pred[i, :, 0], "--", label=f"{steps} steps")
        ax.plot(support[0][i, :, 0], support[1][i, :, 0], "r^", ms=8, label="support")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
