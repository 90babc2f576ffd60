"""One held-out evaluation for every learner and task family: the same test tasks, adaptation steps 0..k,
mean and 95% CI over tasks, one JSON schema, the adaptation curve and the family's own picture.

    for each chunk c of at most batch_size tasks:
        g = Generator(seed, c);  tasks = dist.sample(n, g, "test")
        per step s = 0..k, per task: metrics = source.evaluate(learner, meta, tasks, k, g)
             supervised: loss (and accuracy) on the query set after s steps on the support set
             RL: the average return of fresh episodes after s steps, each step on the last step's episodes
    summary: {metric: {mean, ci95, per_task}}; a non-finite value is written as null, with a warning
    files: eval.json (one schema for all families), eval.png (adaptation curves), eval_episodes.png

The tasks and data depend on (seed, chunk) only: every evaluation of every run and learner sees the same.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metarl.algorithms.base import Learner
from metarl.core.files import atomic_write_text
from metarl.core.params import MetaParams, detach
from metarl.core.source import Source
from metarl.core.stats import mean_ci95


class EvaluationDiverged(RuntimeWarning):
    """Non-finite metrics on held-out tasks (written as null): said once per process, not once per evaluation."""


warnings.filterwarnings("once", category=EvaluationDiverged)


class Evaluator:
    def __init__(self, source: Source, num_tasks: int, steps: int, batch_size: int = 500, seed: int = 12345,
                 plot_tasks: int = 4, progress: bool = False):
        self.source, self.num_tasks, self.steps = source, num_tasks, steps
        self.batch_size, self.seed, self.plot_tasks, self.progress = batch_size, seed, plot_tasks, progress
        self.trace: dict[str, Any] | None = None

    def run(self, learner: Learner, meta: MetaParams) -> dict[str, Any]:
        meta, t0 = detach(meta), time.perf_counter()
        per_step: list[dict[str, list[torch.Tensor]]] = [{} for _ in range(self.steps + 1)]
        done, chunk = 0, 0
        bar = tqdm(total=self.num_tasks, desc="held-out evaluation", unit="task", disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        while done < self.num_tasks:
            n = min(self.batch_size, self.num_tasks - done)
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + chunk)
            tasks = self.source.dist.sample(n, gen, "test")
            metrics, trace = self.source.evaluate(learner, meta, tasks, self.steps, gen,
                                                  self.plot_tasks if chunk == 0 else 0)
            self.trace = trace if chunk == 0 else self.trace
            for s, m in enumerate(metrics):
                for k, v in m.items():
                    per_step[s].setdefault(k, []).append(v.detach().double().cpu())
            done, chunk = done + n, chunk + 1
            bar.update(n)
        bar.close()
        names = list(per_step[0])
        summary: dict[str, Any] = {"family": self.source.dist.name, "metric": self.source.headline, "metrics": names,
                                   "steps": list(range(self.steps + 1)), "num_tasks": self.num_tasks, "split": "test",
                                   "seed": self.seed, "protocol": self.source.protocol(learner),
                                   "wall_s": round(time.perf_counter() - t0, 1)}
        diverged: dict[str, list[int]] = {}
        for name in names:
            values = [torch.cat(per_step[s][name]) for s in range(self.steps + 1)]
            stats = [mean_ci95(v) for v in values]
            summary[name] = {"mean": [_finite(m) for m, _ in stats], "ci95": [_finite(c) for _, c in stats],
                             "per_task": [[_finite(x, 6) for x in v.tolist()] for v in values]}
            bad = [s for s, v in enumerate(values) if not bool(torch.isfinite(v).all())]
            if bad:
                diverged[name] = bad
        if diverged:
            summary["diverged_steps"] = diverged
            where = "; ".join(f"{k} after steps {', '.join(map(str, v))}" for k, v in diverged.items())
            warnings.warn(f"evaluation diverged: non-finite {where} on some held-out tasks (written as null; "
                          "a smaller inner step size may help)", EvaluationDiverged, stacklevel=2)
        return summary

    def write(self, summary: dict[str, Any], out_dir: str | Path, stem: str = "eval") -> dict[str, Path]:
        """STEM.json, STEM.png (adaptation curves) and STEM_episodes.png (the task family's picture of a few
        tasks, if it draws one) in out_dir."""
        from metarl.run import plots

        out_dir = Path(out_dir)
        paths = {"json": atomic_write_text(out_dir / f"{stem}.json", json.dumps(summary, indent=1, allow_nan=False))}
        paths["curve"] = plots.save_figure(plots.plot_adaptation_curves(summary), out_dir / f"{stem}.png")
        hook = getattr(self.source.dist, "plot_adaptation", None)
        if hook is not None and self.trace is not None and self.plot_tasks > 0:
            paths["episodes"] = plots.save_figure(hook(self.trace), out_dir / f"{stem}_episodes.png")
        return paths


def _finite(x: float, digits: int | None = None) -> float | None:
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}") if digits else x


def eval_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """{eval/<metric>_step<s>: mean} for the logger (non-finite ones left out)."""
    return {f"eval/{name}_step{s}": m for name in summary["metrics"]
            for s, m in zip(summary["steps"], summary[name]["mean"]) if m is not None}


def format_summary(summary: dict[str, Any]) -> str:
    """A small table: steps, then mean +- CI of each metric."""
    names = summary["metrics"]
    cell = lambda m, c: "diverged".rjust(20) if m is None else f"{m:>11.4f} +- {c or 0:<6.4f}"  # noqa: E731
    lines = ["steps  " + "  ".join(f"{n:>20s}" for n in names)]
    for i, s in enumerate(summary["steps"]):
        lines.append(f"{s:>5d}  " + "  ".join(cell(summary[n]["mean"][i], summary[n]["ci95"][i]) for n in names))
    return "\n".join(lines)


def load_run(checkpoint: str | Path, flags: list[str] = ()):
    """(config, built run, meta-parameters, checkpoint state) of a checkpoint, its config overridden by flags."""
    from metarl.run.build import apply_process_settings, build
    from metarl.run.checkpoint import checkpoint_path, load_checkpoint, matching_params
    from metarl.run.cli import parse_config

    state = load_checkpoint(checkpoint)
    cfg = parse_config(list(flags), base={**state["config"], "resume": False})
    apply_process_settings(cfg)
    run = build(cfg)
    meta = matching_params(run.learner.init_meta_params(), state["meta_params"], f"checkpoint {checkpoint_path(checkpoint)}")
    return cfg, run, meta, state


def evaluate_checkpoint(checkpoint: str | Path, flags: list[str] = (), out: str | Path | None = None):
    """Evaluate a checkpoint of any family with its own config, overridden by config flags (e.g.
    ["--eval.num_tasks", "100"]); writes OUT (default RUN_DIR/evaluate.json) and its pictures.
    Returns (summary, {name: path}). The output path is checked before anything is evaluated."""
    from metarl.core.files import check_writable
    from metarl.run.checkpoint import checkpoint_path

    out = check_writable(Path(out) if out else checkpoint_path(checkpoint).parent / "evaluate.json")
    cfg, run, meta, state = load_run(checkpoint, flags)
    e = cfg.eval
    evaluator = Evaluator(run.source, e.num_tasks, e.steps, e.batch_size, e.seed, e.plot_tasks, cfg.log.progress)
    summary = evaluator.run(run.learner, meta)
    summary["iteration"] = state["iteration"]
    return summary, evaluator.write(summary, out.parent, out.stem)
