#!/usr/bin/env python
"""Meta-train a policy on a batched RL task family: parse config, build, run.

    python scripts/train_rl.py --config configs/nav2d_maml_trpo.yaml [--section.field value ...] [--resume]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metarl.cli import main_guard  # noqa: E402
from metarl.config import parse_cli, to_dict  # noqa: E402
from metarl.logger import make_logger  # noqa: E402
from metarl.rl.config import RLConfig  # noqa: E402
from metarl.rl.trainer import RLTrainer  # noqa: E402


@main_guard
def main() -> None:
    cfg = parse_cli(RLConfig, description=__doc__)
    run_dir = cfg.resolved_run_dir()
    logger = make_logger(cfg.log, run_dir, to_dict(cfg), cfg.run_name())
    try:
        trainer = RLTrainer(cfg, logger)
        result = trainer.run_training()
    finally:
        logger.close()
    ret = result["return"]
    print(f"\nheld-out evaluation: {result['num_tasks']} test tasks x {result['episodes_per_task']} episodes "
          f"(training: {result['iteration']} iterations, {result['train_time_s']:.0f} s, {result['env_steps']} env steps)")
    for k, m, ci in zip(result["steps"], ret["mean"], ret["ci95"]):
        print(f"  after {k} steps: average return {m:.2f} +- {ci:.2f}")
    print(f"wrote {run_dir}/eval.json, {run_dir}/eval.png, {run_dir}/trajectories.png, {trainer.ckpt_path}")


if __name__ == "__main__":
    main()
