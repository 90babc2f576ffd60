#!/usr/bin/env python
"""Evaluate a meta-RL checkpoint on held-out tasks: returns after 0..k adaptation steps (mean, 95% CI).

    python scripts/evaluate_rl.py --config configs/nav2d_maml_trpo.yaml [--eval.num_tasks 100 --eval.steps 3]

Reads RUN_DIR/checkpoint.pt (run_dir from the config); writes RUN_DIR/eval.json, eval.png, trajectories.png.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metarl.checkpoint import load_checkpoint  # noqa: E402
from metarl.cli import main_guard  # noqa: E402
from metarl.config import parse_cli, to_dict  # noqa: E402
from metarl.errors import CheckpointError  # noqa: E402
from metarl.logger import make_logger  # noqa: E402
from metarl.rl.build import build_rl  # noqa: E402
from metarl.rl.config import RLConfig  # noqa: E402
from metarl.rl.evaluate import evaluate_rl, save_evaluation  # noqa: E402


@main_guard
def main() -> None:
    cfg = parse_cli(RLConfig, description=__doc__)
    run_dir = cfg.resolved_run_dir()
    state = load_checkpoint(run_dir / "checkpoint.pt")
    run = build_rl(cfg)
    theta = state["meta_params"]["theta"]
    init = run.algo.init_params()
    if set(theta) != set(init) or any(theta[k].shape != init[k].shape for k in init):
        raise CheckpointError(f"{run_dir / 'checkpoint.pt'} holds a different policy than the config")
    logger = make_logger(cfg.log, run_dir, to_dict(cfg), cfg.run_name() + "-eval")
    try:
        result = evaluate_rl(cfg, run, theta)
        result["iteration"] = state["iteration"]
        save_evaluation(result, run_dir, logger, state["iteration"])
    finally:
        logger.close()
    for k, m, ci in zip(result["steps"], result["return"]["mean"], result["return"]["ci95"]):
        print(f"after {k} steps: average return {m:.2f} +- {ci:.2f}  ({result['num_tasks']} held-out tasks)")


if __name__ == "__main__":
    main()
