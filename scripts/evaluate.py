#!/usr/bin/env python
"""Evaluate a checkpoint on held-out tasks at 0..k adaptation steps; write JSON and a PNG.

    python scripts/evaluate.py --checkpoint runs/sinusoid-maml-s0/checkpoint.pt --out results.json
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import tyro  # noqa: E402

from metarl import build  # noqa: E402
from metarl.checkpoint import load_checkpoint  # noqa: E402
from metarl.cli import main_guard  # noqa: E402
from metarl.config import Config, from_dict  # noqa: E402
from metarl.errors import CheckpointError, ConfigError  # noqa: E402
from metarl.evaluate import Evaluator, format_summary  # noqa: E402


@dataclass
class EvaluateArgs:
    checkpoint: str
    """Checkpoint written by scripts/train.py."""
    out: str = "results.json"
    """JSON file for the results; the PNG goes beside it with the suffix .png."""
    num_tasks: Optional[int] = None
    """Held-out tasks (default: the run's eval.num_tasks)."""
    steps: Optional[int] = None
    """Adaptation steps 0..steps (default: the run's eval.steps)."""
    k_support: Optional[int] = None
    """Support examples per task (default: the run's eval.k_support)."""
    device: str = "auto"
    """Torch device: auto, cpu, cuda."""


@main_guard
def main() -> None:
    args = tyro.cli(EvaluateArgs, description=__doc__, use_underscores=True)
    state = load_checkpoint(args.checkpoint)
    try:
        cfg = from_dict(Config, state["config"])
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"checkpoint {args.checkpoint} holds no usable config ({e})") from None
    for name in ("num_tasks", "steps", "k_support"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg.eval, name, value)
    cfg.validate()
    device = build.resolve_device(args.device)
    dist = build.build_task_distribution(cfg)
    model = build.build_model(cfg, dist, torch.Generator().manual_seed(cfg.seed))
    learner = build.build_learner(cfg, model, dist, device)
    meta = learner.init_meta_params()
    try:
        meta = {g: {k: state["meta_params"][g][k].to(v) for k, v in d.items()} for g, d in meta.items()}
    except KeyError as e:
        raise CheckpointError(f"checkpoint {args.checkpoint} lacks meta-parameter {e}") from None
    e = cfg.eval
    evaluator = Evaluator(dist, e.num_tasks, e.k_support, e.k_query, e.steps, e.batch_size, e.seed, device)
    summary = evaluator.run(learner, meta)
    out = Path(args.out)
    evaluator.write(summary, learner, meta, out, out.with_suffix(".png"), e.plot_tasks)
    print(format_summary(summary))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
