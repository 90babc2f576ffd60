"""Figures a person would rather look at than read: the adaptation curve of an evaluation and a run's learning
curve (the task families draw their own pictures of what the learner does: `plot_adaptation` in envs)."""
from __future__ import annotations

import json
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


#: what a learning curve shows, first found wins: RL runs their return before and after adaptation
CURVE_KEYS = (("train/return_pre", "train/return_post"), ("train/meta_loss",))


def read_metrics(path: str | Path) -> dict[str, dict[int, float]]:
    """metrics.jsonl as {metric: {step: value}}; a resumed run's repeated steps keep their last value."""
    series: dict[str, dict[int, float]] = {}
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
        if "step" not in row:
            continue
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(key, {})[int(row["step"])] = float(value)
    return series


def plot_learning_curve(series: dict[str, dict[int, float]], title: str = "", trials: bool = False):
    """The training curve per iteration (RL: return before and after the inner adaptation; trials, RL²: of the
    first and the last episode of a trial) and, where the run logged them, the periodic held-out evaluations as
    markers. None when the run logged none of these."""
    keys = next((ks for ks in CURVE_KEYS if all(k in series for k in ks)), None)
    if keys is None:
        return None
    terms = sorted(k for k in series if k.startswith("train/reward_") and k.endswith("_pre"))
    fig, axes = plt.subplots(1, 2 if terms else 1, figsize=(12 if terms else 6.5, 3.8), squeeze=False)
    ax = axes[0, 0]
    names = {"train/return_pre": "first episode of a trial" if trials else "before adaptation",
             "train/return_post": "last episode of a trial" if trials else "after adaptation"}
    for key in keys:
        steps = sorted(series[key])
        ax.plot(steps, [series[key][s] for s in steps], lw=1, label=names.get(key, key.split("/", 1)[1].replace("_", " ")))
    for key in sorted(k for k in series if k.startswith("eval/return_step") or k.startswith("eval/loss_step")):
        steps = sorted(series[key])
        ax.plot(steps, [series[key][s] for s in steps], "o", ms=4, label=f"held-out {key.split('/', 1)[1]}")
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("return" if "return" in keys[0] else "meta-loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if terms:  # where the return comes from: each reward term per episode, and how long episodes last
        _plot_reward_terms(axes[0, 1], series, terms)
    return fig


def _plot_reward_terms(ax, series: dict[str, dict[int, float]], terms: list[str]) -> None:
    for key in terms:
        steps = sorted(series[key])
        ax.plot(steps, [series[key][s] for s in steps], lw=1, label=key[len("train/reward_"):-len("_pre")])
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("sum over an episode, before adaptation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    if "train/episode_length_pre" in series:
        twin, steps = ax.twinx(), sorted(series["train/episode_length_pre"])
        twin.plot(steps, [series["train/episode_length_pre"][s] for s in steps], "k:", lw=1)
        twin.set_ylabel("episode length (dotted)")
        twin.set_ylim(bottom=0)
    ax.set_title("reward terms and episode length", fontsize=9)


def save_figure(fig, path: str | Path) -> Path:
    """The figure as a PNG at `path`, written atomically; the figure closed."""
    from metarl.core.files import atomic_write

    fig.tight_layout()
    try:
        return atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    finally:
        plt.close(fig)


def save_learning_curve(run_dir: str | Path, title: str, trials: bool = False) -> Path | None:
    """RUN_DIR/learning_curve.png from RUN_DIR/metrics.jsonl (every segment of a resumed run); None when the run
    logged no metrics or no training curve."""
    metrics = Path(run_dir) / "metrics.jsonl"
    if not metrics.is_file():
        return None
    fig = plot_learning_curve(read_metrics(metrics), title, trials)
    return None if fig is None else save_figure(fig, Path(run_dir) / "learning_curve.png")


if __name__ == "__main__":  # python -m metarl.run.plots RUN_DIR: (re)draw RUN_DIR/learning_curve.png
    import sys

    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "metrics.jsonl").is_file():
        raise SystemExit("usage: python -m metarl.run.plots RUN_DIR  (a run directory with metrics.jsonl)")
    import yaml

    from metarl.algorithms import ALGORITHMS

    config = Path(sys.argv[1]) / "config.yaml"
    algo = (yaml.safe_load(config.read_text()) or {}).get("learner", {}).get("algo") if config.is_file() else None
    path = save_learning_curve(sys.argv[1], Path(sys.argv[1]).name,
                               trials=algo in ALGORITHMS and ALGORITHMS[algo].in_context)
    if path is None:
        raise SystemExit(f"{sys.argv[1]}/metrics.jsonl has no training curve to draw")
    print(path)
