#!/usr/bin/env python
"""Evaluate a checkpoint of any family on held-out tasks at 0..k adaptation steps: JSON, curves, a picture.

    python scripts/evaluate.py --checkpoint runs/sinusoid-maml-s0/checkpoint.pt [--out results.json]
                               [--eval.num_tasks 100 --eval.steps 3 --device cpu ...]

Any config flag overrides the run's own config (saved in the checkpoint). Writes OUT (default:
RUN_DIR/evaluate.json), OUT with .png (adaptation curves) and OUT_episodes.png (the family's picture).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metarl.core.errors import ConfigError  # noqa: E402
from metarl.run.cli import main_guard, parse_config, pop_flag  # noqa: E402
from metarl.run.evaluate import evaluate_checkpoint, format_summary  # noqa: E402


@main_guard
def main() -> None:
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        parse_config(["--help"], description=__doc__ + "\nConfig flags override the checkpoint's own config:")
    checkpoint, out = pop_flag(args, "--checkpoint"), pop_flag(args, "--out")
    if checkpoint is None:
        raise ConfigError("--checkpoint PATH is required (a checkpoint.pt written by scripts/train.py)")
    summary, paths = evaluate_checkpoint(checkpoint, args, out)
    print(format_summary(summary))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
