"""MAML-TRPO meta-iterations on a MuJoCo task distribution with the MAML paper's configuration, timed.

  python scripts/bench_mujoco_maml_trpo.py --env HalfCheetahVel --iterations 3

Paper settings (Finn et al. 2017, section 5.3 / appendix): H = 200, 20 trajectories per task, meta-batch 40,
one inner policy-gradient step with lr 0.1, TRPO outer step (max KL 0.01), policy MLP 2 x 100 ReLU. Each
iteration collects the support (meta-policy) and query (adapted policies) rollouts on the batched env and
takes one outer TRPO step; sampling and optimisation are timed separately. The per-iteration line shows the
mean return before adaptation (support) and after one step (query): run it longer for a learning curve.
The last line is one JSON object with the mean seconds per iteration and their split.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="HalfCheetahVel")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--tasks", type=int, default=40, help="meta-batch size")
    p.add_argument("--episodes", type=int, default=20, help="trajectories per task")
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--inner-lr", type=float, default=0.1)
    p.add_argument("--max-kl", type=float, default=0.01)
    p.add_argument("--hvp", default="autograd", help="TRPO KL Hessian-vector product: autograd or gauss_newton")
    p.add_argument("--hvp-task-fraction", type=float, default=1.0, help="fraction of tasks in the HVPs")
    p.add_argument("--backend", default="cpu", help="physics backend: cpu, or warp (with --device cuda)")
    p.add_argument("--device", default="cpu", help="torch device of the policy and the TRPO step")
    p.add_argument("--torch-threads", type=int, default=2, help="torch threads (the optimisation uses them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jsonl", default="", help="append one JSON line per iteration to this file")
    args = p.parse_args()
    torch.set_num_threads(args.torch_threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    from metarl.config import Config, from_dict
    from metarl.trainer import Trainer

    cfg = from_dict(Config, {
        "task": {"name": args.env, "horizon": args.horizon}, "model": {"hidden": [100, 100]},
        "learner": {"inner_lr": args.inner_lr},
        "outer": {"optimizer": "trpo", "max_kl": args.max_kl, "hvp": args.hvp, "hvp_task_fraction": args.hvp_task_fraction},
        "rl": {"episodes_per_task": args.episodes, "backend": args.backend},
        "train": {"meta_batch_size": args.tasks, "iterations": args.iterations},
        "seed": args.seed, "device": args.device, "run_dir": "/tmp/metarl-bench-unused", "log": {"wandb": "disabled"},
    }).validate()
    trainer = Trainer(cfg)  # the training loop's own pieces: rollout source, learner, TRPO step
    sampler = trainer.source.sampler(args.tasks, args.episodes)
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
    print(json.dumps({
        "env": args.env, "tasks": args.tasks, "episodes": args.episodes, "horizon": args.horizon,
        "engine": type(env.engine).__name__, "iterations": len(rows), "hvp": args.hvp,
        "hvp_task_fraction": args.hvp_task_fraction,
        "seconds_per_iteration": round(float(np.mean([r["seconds"] for r in warm])), 2),
        "sampling_s": round(float(np.mean([r["sampling_s"] for r in warm])), 2),
        "optimisation_s": round(float(np.mean([r["optimisation_s"] for r in warm])), 2),
        "env_steps_per_iteration": 2 * args.tasks * args.episodes * args.horizon,
        "last_return_pre": rows[-1]["return_pre"], "last_return_post": rows[-1]["return_post"],
    }))


if __name__ == "__main__":
    main()
