#!/usr/bin/env python
"""Meta-train a learner on a supervised task distribution (H = 1): parse config, build, run.

    python scripts/train.py --config configs/sinusoid_maml.yaml [--section.field value ...] [--resume]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metarl.cli import main_guard  # noqa: E402
from metarl.config import Config, parse_cli  # noqa: E402
from metarl.trainer import Trainer  # noqa: E402


@main_guard
def main() -> None:
    cfg = parse_cli(Config, description=__doc__)
    trainer = Trainer(cfg)
    result = trainer.run()
    if "eval" in result:
        ev = result["eval"]
        print(f"\nheld-out evaluation: {ev['num_tasks']} test tasks, {ev['k_support']}-shot support "
              f"(training took {result['train_seconds']:.0f} s for {result['iterations']} iterations)")
        print(result["table"])
        print(f"before adaptation: loss {ev['loss']['mean'][0]:.4f}; after {ev['steps'][-1]} steps: "
              f"loss {ev['loss']['mean'][-1]:.4f}")
        print(f"wrote {trainer.run_dir}/eval.json, {trainer.run_dir}/eval.png, {trainer.checkpoint_path}")


if __name__ == "__main__":
    main()
