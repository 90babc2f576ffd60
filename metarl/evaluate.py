"""Held-out evaluation shared by every learner: the same test tasks, adaptation steps 0..k, mean and 95% CI.

Episodes are drawn from the test split with generators seeded by (seed, chunk), so every evaluation of every
run and learner sees the same tasks, support sets and query sets, and evaluating never touches the
training task stream.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from envs.supervised import Episode, SupervisedTaskDistribution
from metarl.learners.base import MetaLearner, MetaParams
from metarl.stats import mean_ci95


class Evaluator:
    def __init__(self, dist: SupervisedTaskDistribution, num_tasks: int, k_support: int, k_query: int,
                 steps: int, batch_size: int = 500, seed: int = 12345, device: torch.device | str = "cpu"):
        self.dist = dist
        self.num_tasks = num_tasks
        self.k_support = k_support
        self.k_query = k_query
        self.steps = steps
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device(device)

    def episodes(self):
        """The held-out episodes, in chunks of at most batch_size tasks."""
        done, chunk = 0, 0
        while done < self.num_tasks:
            n = min(self.batch_size, self.num_tasks - done)
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + chunk)
            yield self.dist.sample_episode(n, self.k_support, self.k_query, gen, split="test").to(self.device)
            done, chunk = done + n, chunk + 1

    def per_task_metrics(self, learner: MetaLearner, meta: MetaParams, episode: Episode) -> list[dict[str, torch.Tensor]]:
        """For each number of steps 0..k: per-task query metrics (each a tensor of shape (tasks,))."""
        path = learner.adapt_path(meta, episode.support, self.steps)
        with torch.no_grad():
            return [{k: v.detach() for k, v in learner.query_metrics(p, episode.query).items()} for p in path]

    def run(self, learner: MetaLearner, meta: MetaParams) -> dict[str, Any]:
        meta = {g: {k: v.detach() for k, v in d.items()} for g, d in meta.items()}
        per_step: list[dict[str, list[torch.Tensor]]] = [dict() for _ in range(self.steps + 1)]
        for episode in self.episodes():
            for s, metrics in enumerate(self.per_task_metrics(learner, meta, episode)):
                for k, v in metrics.items():
                    per_step[s].setdefault(k, []).append(v.cpu())
        summary: dict[str, Any] = {
            "steps": list(range(self.steps + 1)),
            "num_tasks": self.num_tasks,
            "k_support": self.k_support,
            "k_query": self.k_query,
        }
        for name in per_step[0]:
            stats = [mean_ci95(torch.cat(per_step[s][name])) for s in range(self.steps + 1)]
            summary[name] = {"mean": [m for m, _ in stats], "ci95": [c for _, c in stats]}
        return summary

    # ------------------------------------------------------------------ outputs

    def write(self, summary: dict[str, Any], learner: MetaLearner, meta: MetaParams, out_json: str | Path,
              out_png: str | Path | None = None, plot_tasks: int = 4) -> None:
        out_json = Path(out_json)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(summary, indent=2))
        if out_png is not None:
            self.plot(summary, learner, meta, out_png, plot_tasks)

    def plot(self, summary: dict[str, Any], learner: MetaLearner, meta: MetaParams, out_png: str | Path,
             plot_tasks: int = 4) -> Path:
        import matplotlib.pyplot as plt

        from metarl import plots

        metric = "accuracy" if "accuracy" in summary else "loss"
        n = max(1, min(plot_tasks, self.batch_size, self.num_tasks))
        kind = self.dist.kind
        if kind == "regression" and hasattr(self.dist, "target"):
            fig, axes = plt.subplots(1, n + 1, figsize=(4 * (n + 1), 3.6))
            plots.plot_adaptation_curve(axes[0], summary, metric)
            self._plot_regression(learner, meta, axes[1:], n)
        elif kind == "classification" and hasattr(plots, "plot_classification_episode"):
            fig = plt.figure(figsize=(14, 6))
            plots.plot_adaptation_curve(fig.add_subplot(1, 3, 1), summary, metric)
            self._plot_classification(learner, meta, fig)
        else:
            fig, ax = plt.subplots(figsize=(5, 3.6))
            plots.plot_adaptation_curve(ax, summary, metric)
        return plots.save_figure(fig, out_png)

    def _first_episode(self, n: int) -> Episode:
        ep = next(iter(self.episodes()))
        take = lambda d: tuple(t[:n] for t in d)  # noqa: E731
        return Episode({k: v[:n] for k, v in ep.tasks.items()}, take(ep.support), take(ep.query))

    def _plot_regression(self, learner: MetaLearner, meta: MetaParams, axes, n: int) -> None:
        from metarl import plots

        ep = self._first_episode(n)
        lo, hi = getattr(self.dist, "x_range", (-5.0, 5.0))
        dtype = ep.support[0].dtype
        xs = torch.linspace(lo, hi, 200, dtype=dtype, device=self.device)[None, :, None].expand(n, 200, 1)
        shown = sorted({0, 1, self.steps} & set(range(self.steps + 1)))
        path = learner.adapt_path(meta, ep.support, self.steps)
        predict = torch.func.vmap(learner.objective.predict)
        with torch.no_grad():
            preds = {s: predict(path[s], xs).cpu() for s in shown}
            truth = self.dist.target(ep.tasks, xs).cpu()
        plots.plot_regression_fits(axes, xs.cpu(), truth, preds, tuple(t.cpu() for t in ep.support))

    def _plot_classification(self, learner: MetaLearner, meta: MetaParams, fig) -> None:
        from metarl import plots

        ep = self._first_episode(1)
        path = learner.adapt_path(meta, ep.support, self.steps)
        predict = torch.func.vmap(learner.objective.predict)
        with torch.no_grad():
            logits = predict(path[-1], ep.query[0])
        plots.plot_classification_episode(fig, ep.support, ep.query, logits.argmax(-1)[0], self.steps)


def format_summary(summary: dict[str, Any]) -> str:
    """A small table: steps, then mean +- CI of each metric."""
    names = [k for k in ("loss", "accuracy") if k in summary]
    lines = ["steps  " + "  ".join(f"{n:>20s}" for n in names)]
    for i, s in enumerate(summary["steps"]):
        cells = [f"{summary[n]['mean'][i]:>11.4f} +- {summary[n]['ci95'][i]:<6.4f}" for n in names]
        lines.append(f"{s:>5d}  " + "  ".join(cells))
    return "\n".join(lines)
