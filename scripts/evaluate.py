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

from metarl.cli import main_guard  # noqa: E402
from metarl.config import Config, help_text  # noqa: E402
from metarl.errors import ConfigError  # noqa: E402
from metarl.evaluate import evaluate_checkpoint, format_summary  # noqa: E402


def pop_flag(args: list[str], flag: str) -> str | None:
    """Remove `flag VALUE` or `flag=VALUE` from args; the value, or None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
            del args[i : i + 2]
            return value
        if a.startswith(flag + "="):
            return args.pop(i).split("=", 1)[1]
    return None


@main_guard
def main() -> None:
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print(__doc__ + "\nConfig flags:\n" + help_text(Config, None))
        return
    checkpoint, out = pop_flag(args, "--checkpoint"), pop_flag(args, "--out")
    if checkpoint is None:
        raise ConfigError("--checkpoint PATH is required (a checkpoint.pt written by scripts/train.py)")
    summary, paths = evaluate_checkpoint(checkpoint, args, out)
    print(format_summary(summary))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
