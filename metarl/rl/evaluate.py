"""Held-out evaluation of a meta-policy: average return after 0..k adaptation steps on test-split tasks.

Step k's return is that of fresh episodes collected with the policy after k inner steps, each step on the
episodes of the previous one (as in the MAML paper's Table 4). Mean and 95% CI over tasks; JSON, a PNG of the
adaptation curve, and a PNG of trajectories before and after adaptation for a few goals.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from envs.batched_registry import make_batched_env
from metarl.rl.advantages import process_rollouts
from metarl.rl.config import RLConfig
from metarl.rl.maml_rl import adapt_per_task
from metarl.rl.objective import RLObjective
from metarl.rl.policy import Params, expand_params
from metarl.rl.sampler import BatchedSampler
from metarl.stats import mean_ci95


def evaluate_rl(cfg: RLConfig, run, theta: Params, num_tasks: int | None = None) -> dict[str, Any]:
    """Returns after 0..cfg.eval.steps steps: {"steps", "return": {"mean", "ci95", "per_task"}, "trajectories"}."""
    e = cfg.eval
    n = num_tasks or e.num_tasks
    gen = torch.Generator().manual_seed(e.seed)
    tasks = run.dist.sample(n, gen, "test")
    env = make_batched_env(cfg.env.name, n, e.episodes_per_task, run.horizon, device=run.device)
    sampler = BatchedSampler(env, run.policy)
    objective = run.algo.objective if isinstance(run.algo.objective, RLObjective) else RLObjective(run.policy)
    policy_params, lr = run.algo.adaptation({k: v.to(run.device) for k, v in theta.items()})
    params = expand_params(policy_params, n)
    per_step, trajectories = [], []
    for k in range(e.steps + 1):
        r = sampler.collect(params, tasks, gen)
        per_step.append(r.episode_returns.mean(1).cpu())
        trajectories.append((r.obs[: e.plot_tasks, :3].cpu(), r.mask[: e.plot_tasks, :3].cpu()))
        if k < e.steps:
            data = process_rollouts(r, cfg.algo.gamma, cfg.algo.gae_lambda, cfg.algo.normalize_advantages)
            params = adapt_per_task(objective, params, data, run.algo.step_size(lr, k))
    stats = [mean_ci95(v) for v in per_step]
    return {
        "steps": list(range(e.steps + 1)),
        "num_tasks": n,
        "episodes_per_task": e.episodes_per_task,
        "return": {"mean": [s[0] for s in stats], "ci95": [s[1] for s in stats],
                   "per_task": [v.tolist() for v in per_step]},
        "goals": tasks[next(iter(tasks))][: e.plot_tasks].cpu().tolist(),
        "_trajectories": trajectories,
    }


def save_evaluation(result: dict[str, Any], out_dir: str | Path, logger=None, step: int | None = None) -> dict[str, Path]:
    """eval.json, eval.png (adaptation curve) and trajectories.png (2-D envs) under out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trajectories = result.pop("_trajectories", None)
    paths = {"json": out / "eval.json", "curve": out / "eval.png"}
    paths["json"].write_text(json.dumps(result, indent=1))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(result["steps"], result["return"]["mean"], yerr=result["return"]["ci95"], marker="o", capsize=3)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("average return")
    ax.set_title(f"{result['num_tasks']} held-out tasks, mean and 95% CI")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths["curve"], dpi=100)
    plt.close(fig)
    if trajectories is not None and trajectories[0][0].shape[-1] == 2:
        paths["trajectories"] = out / "trajectories.png"
        _plot_trajectories(plt, trajectories, result["goals"], paths["trajectories"])
    if logger is not None:
        for name, path in paths.items():
            if path.suffix == ".png":
                logger.log_image(f"eval/{name}", path, step)
        logger.log({f"eval/return_step{k}": m for k, m in zip(result["steps"], result["return"]["mean"])}, step or 0)
    return paths


def _plot_trajectories(plt, trajectories, goals, path: Path) -> None:
    n_goals = len(goals)
    fig, axes = plt.subplots(1, n_goals, figsize=(3.2 * n_goals, 3.2), squeeze=False)
    shown = {0: "before adaptation", len(trajectories) - 1: f"after {len(trajectories) - 1} steps"}
    for g, ax in enumerate(axes[0]):
        for k, label in shown.items():
            obs, mask = trajectories[k]
            for ep in range(obs.shape[1]):
                valid = int(mask[g, ep].sum())
                xy = obs[g, ep, : max(valid, 1)]
                ax.plot(xy[:, 0], xy[:, 1], color="tab:gray" if k == 0 else "tab:blue", alpha=0.7,
                        label=label if ep == 0 else None)
        ax.scatter([goals[g][0]], [goals[g][1]], marker="*", s=150, color="tab:red", label="goal", zorder=3)
        ax.set_xlim(-0.6, 0.6), ax.set_ylim(-0.6, 0.6), ax.set_aspect("equal")
        ax.set_title(f"goal {g}")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
