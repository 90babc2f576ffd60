"""MAML-TRPO meta-iterations on a MuJoCo task distribution with the shipped config's settings, timed.

  python scripts/bench_mujoco_maml_trpo.py --env HalfCheetahVel --iterations 3

The defaults are those of configs/<env>_maml_trpo.yaml (the MAML paper's: H = 200, 20 trajectories per task,
meta-batch 40, one inner policy-gradient step with lr 0.1, TRPO outer step with max KL 0.01, policy MLP
2 x 100 ReLU; the KL's curvature products as the config sets them); each flag overrides one of them. Each
iteration collects the support (meta-policy) and query (adapted policies) rollouts on the batched env and
takes one outer TRPO step; sampling and optimisation (everything else: advantages, adaptation, the TRPO
step) are timed separately. The per-iteration line shows the mean return before adaptation (support) and
after one step (query). The last line is one JSON object with the mean seconds per iteration, their split
and optimisation / sampling.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def shipped_config(env: str) -> Path:
    """configs/<env in snake case>_maml_trpo.yaml, e.g. HalfCheetahVel -> halfcheetah_vel_maml_trpo.yaml."""
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", env).lower().replace("half_cheetah", "halfcheetah")
    path = ROOT / "configs" / f"{name}_maml_trpo.yaml"
    if not path.is_file():
        raise SystemExit(f"error: no shipped config {path.relative_to(ROOT)} for --env {env}")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="HalfCheetahVel")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--tasks", type=int, help="meta-batch size")
    p.add_argument("--episodes", type=int, help="trajectories per task")
    p.add_argument("--horizon", type=int)
    p.add_argument("--inner-lr", type=float)
    p.add_argument("--max-kl", type=float)
    p.add_argument("--hvp", help="TRPO KL Hessian-vector product: autograd or gauss_newton")
    p.add_argument("--hvp-task-fraction", type=float, help="fraction of tasks in the HVPs")
    p.add_argument("--hvp-episode-fraction", type=float, help="fraction of each task's episodes in the HVPs")
    p.add_argument("--backend", default="cpu", help="physics backend: cpu, or warp (with --device cuda)")
    p.add_argument("--device", default="cpu", help="torch device of the policy and the TRPO step")
    p.add_argument("--torch-threads", type=int, default=2, help="torch threads (the optimisation uses them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jsonl", default="", help="append one JSON line per iteration to this file")
    args = p.parse_args()
    torch.set_num_threads(args.torch_threads)
    sys.path.insert(0, str(ROOT))

    from metarl.run.config import Config, from_dict, merge_dicts, read_yaml
    from metarl.run.trainer import Trainer

    config_path = shipped_config(args.env)
    flags = {"task": {"horizon": args.horizon}, "learner": {"inner_lr": args.inner_lr},
             "outer": {"max_kl": args.max_kl, "hvp": args.hvp, "hvp_task_fraction": args.hvp_task_fraction,
                       "hvp_episode_fraction": args.hvp_episode_fraction},
             "rl": {"episodes_per_task": args.episodes, "backend": args.backend},
             "train": {"meta_batch_size": args.tasks, "iterations": args.iterations}}
    flags = {k: {f: v for f, v in d.items() if v is not None} for k, d in flags.items()}
    cfg = from_dict(Config, merge_dicts(read_yaml(config_path), {
        **flags, "seed": args.seed, "device": args.device, "run_dir": "/tmp/metarl-bench-unused",
        "log": {"wandb": "disabled"}})).validate()
    trainer = Trainer(cfg)  # the training loop's own pieces: rollout source, learner, TRPO step
    tasks, episodes = cfg.train.meta_batch_size, cfg.rl.episodes_per_task
    sampler = trainer.source.sampler(tasks, episodes)
    timing = {"sampling": 0.0}
    collect = sampler.collect

    def timed_collect(*a, **kw):
        t0 = time.perf_counter()
        out = collect(*a, **kw)
        timing["sampling"] += time.perf_counter() - t0
        return out

    sampler.collect = timed_collect
    env = sampler.env
    rows = []
    for it in range(args.iterations):
        timing["sampling"] = 0.0
        t0 = time.perf_counter()
        info = trainer.step()
        total = time.perf_counter() - t0
        row = {"iteration": it, "seconds": round(total, 2), "sampling_s": round(timing["sampling"], 2),
               "optimisation_s": round(total - timing["sampling"], 2),
               "return_pre": round(info["return_pre"], 2), "return_post": round(info["return_post"], 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
    warm = rows[1:] or rows  # the first iteration pays one-off costs (vmap tracing, allocation)
    sampling, optimisation = (float(np.mean([r[k] for r in warm])) for k in ("sampling_s", "optimisation_s"))
    print(json.dumps({
        "env": args.env, "config": str(config_path.relative_to(ROOT)), "tasks": tasks, "episodes": episodes,
        "horizon": cfg.task.horizon, "engine": type(env.engine).__name__, "iterations": len(rows),
        "hvp": cfg.outer.hvp, "hvp_task_fraction": cfg.outer.hvp_task_fraction,
        "hvp_episode_fraction": cfg.outer.hvp_episode_fraction, "cg_iters": cfg.outer.cg_iters,
        "seconds_per_iteration": round(float(np.mean([r["seconds"] for r in warm])), 2),
        "sampling_s": round(sampling, 2), "optimisation_s": round(optimisation, 2),
        "optimisation_over_sampling": round(optimisation / sampling, 3),
        "env_steps_per_iteration": 2 * tasks * episodes * cfg.task.horizon,
        "last_return_pre": rows[-1]["return_pre"], "last_return_post": rows[-1]["return_post"],
    }))


if __name__ == "__main__":
    main()
