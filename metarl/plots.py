"""Figures a person would rather look at than read: the adaptation curve of an evaluation (the task
families draw their own pictures of what the learner does: `plot_adaptation` in envs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_adaptation_curves(summary: dict[str, Any]):
    """One panel per metric: mean and 95% CI over the held-out tasks after 0..k adaptation steps."""
    names = summary["metrics"]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        steps = [s for s, m in zip(summary["steps"], summary[name]["mean"]) if m is not None]
        mean = [m for m in summary[name]["mean"] if m is not None]
        ci = [c or 0.0 for m, c in zip(summary[name]["mean"], summary[name]["ci95"]) if m is not None]
        ax.errorbar(steps, mean, yerr=ci, marker="o", capsize=3)
        ax.set_xlabel("adaptation steps")
        ax.set_ylabel(f"held-out {name}")
        ax.set_title(f"{summary['family']}: {summary['num_tasks']} held-out tasks, mean and 95% CI", fontsize=9)
        ax.grid(alpha=0.3)
        if name == "loss" and mean and min(mean) > 0 and max(mean) / min(mean) > 20:
            ax.set_yscale("log")
    return fig


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
