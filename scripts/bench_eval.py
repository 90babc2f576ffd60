#!/usr/bin/env python
"""Held-out evaluation against training, side by side, on one config (default: the default Omniglot job).

Times `--iterations` training iterations of the config's own Trainer and an evaluation of `--tasks` held-out
tasks at 0..eval.steps steps (the config's eval settings: query size, task batching, progress bar off),
interleaved over `--rounds` rounds, and projects both to the sizes a user meets: the config's final
evaluation (eval.num_tasks tasks) against 300 training iterations. The last line is one JSON object with
eval_vs_300_iterations (at most 1.0: the final evaluation takes no longer than 300 iterations).

    python scripts/bench_eval.py [--config configs/omniglot_5way1shot.yaml] [--iterations 20] [--tasks 100]
                                 [--rounds 3] [any config flag, e.g. --eval.k_query 15]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metarl.run.cli import parse_config  # noqa: E402
from metarl.run.evaluate import Evaluator  # noqa: E402
from metarl.run.trainer import Trainer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/omniglot_5way1shot.yaml")
    p.add_argument("--iterations", type=int, default=20, help="training iterations timed per round")
    p.add_argument("--tasks", type=int, default=100, help="held-out tasks evaluated per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median of each taken)")
    args, flags = p.parse_known_args()
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = parse_config(["--config", args.config, *flags, "--run_dir", run_dir, "--log.wandb", "disabled",
                            "--train.eval_every", "0"])
        trainer = Trainer(cfg)
        e = cfg.eval
        evaluator = Evaluator(trainer.source, args.tasks, e.steps, e.batch_size, e.seed)
        trainer.step()  # warm-up: first-call costs (data, kernels) are neither's
        train_s, eval_s = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for _ in range(args.iterations):
                trainer.step()
            train_s.append((time.perf_counter() - t0) / args.iterations)
            t0 = time.perf_counter()
            evaluator.run(trainer.learner, trainer.meta)
            eval_s.append((time.perf_counter() - t0) / args.tasks)
    per_iter, per_task = sorted(train_s)[len(train_s) // 2], sorted(eval_s)[len(eval_s) // 2]
    final_eval, train_300 = per_task * e.num_tasks, per_iter * 300
    print(json.dumps({
        "config": args.config, "task_batching": trainer.learner.executor.mode, "eval_tasks": e.num_tasks,
        "eval_steps": e.steps, "eval_k_query": e.k_query, "train_s_per_iter": round(per_iter, 4),
        "eval_s_per_task": round(per_task, 4), "final_eval_s": round(final_eval, 1),
        "train_300_iterations_s": round(train_300, 1), "eval_vs_300_iterations": round(final_eval / train_300, 3),
    }))


if __name__ == "__main__":
    main()
