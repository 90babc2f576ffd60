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


def _mosaic(images: torch.Tensor, cols: int, border: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 1, h, w) images in [0, 1] -> one RGB mosaic (rows * (h + 4), cols * (w + 4), 3);
    `border` (n, 3) colours a 2-pixel frame around each image."""
    n, _, h, w = images.shape
    rows = (n + cols - 1) // cols
    out = torch.ones(rows * (h + 4), cols * (w + 4), 3)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * (h + 4), c * (w + 4)
        if border is not None:
            out[y : y + h + 4, x : x + w + 4] = border[i]
        out[y + 2 : y + 2 + h, x + 2 : x + 2 + w] = images[i, 0, :, :, None].expand(h, w, 3)
    return out


def plot_classification_episode(fig, support, query, pred: torch.Tensor, steps: int, max_query: int = 30) -> None:
    """Support set (one row per class, label on the left) and query images framed green when the adapted
    learner's prediction is right, red when wrong. Arguments hold one task: support = (x (1, N*K, 1, h, w),
    y (1, N*K)), query likewise, pred (N*Q,)."""
    sx, sy = support[0][0].float().cpu(), support[1][0].cpu()
    qx, qy = query[0][0].float().cpu(), query[1][0].cpu()
    norm = lambda x: (x - x.amin()) / (x.amax() - x.amin() + 1e-8)  # noqa: E731
    ways = int(sy.max()) + 1
    order = torch.argsort(sy, stable=True)
    shots = sx.shape[0] // ways
    ax = fig.add_subplot(1, 3, 2)
    ax.imshow(_mosaic(norm(sx[order]), cols=shots).numpy())
    ax.set_yticks([(i + 0.5) * (sx.shape[-2] + 4) for i in range(ways)], [f"class {i}" for i in range(ways)])
    ax.set_xticks([])
    ax.set_title(f"support set ({ways}-way {shots}-shot)")
    q = min(max_query, qx.shape[0])
    right = (pred[:q].cpu() == qy[:q])
    colours = torch.where(right[:, None], torch.tensor([0.1, 0.7, 0.2]), torch.tensor([0.9, 0.1, 0.1]))
    ax = fig.add_subplot(1, 3, 3)
    ax.imshow(_mosaic(norm(qx[:q]), cols=6, border=colours).numpy())
    ax.axis("off")
    ax.set_title(f"query after {steps} steps: {int(right.sum())}/{q} right (green)")
