#!/usr/bin/env python
"""Score a Meta-World run (task.name MetaWorldML1 / MetaWorldML10) with Meta-World's own meta-learning evaluation
(metaworld.evaluation.metalearning_evaluation): success rate on the train and the held-out test goals, mean and
95% CI over repeats (each repeat: the next goal of every sub-env), with the Meta-World / MuJoCo / reward versions.
Writes OUT (JSON, default RUN_DIR/metaworld_eval.json) and the same name .png; its last line is the JSON summary.

    python scripts/evaluate_metaworld.py --checkpoint runs/metaworld-ml1-reach-maml-trpo/checkpoint.pt
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", default="", help="JSON path (default: next to the checkpoint)")
    p.add_argument("--repeats", type=int, default=10, help="evaluations, each on the next goal of every sub-env")
    p.add_argument("--meta-batch-size", type=int, default=0,
                   help="sub-envs per split; 0 = one per skill (Meta-World's evaluation counts the first episodes to "
                        "end per skill, and successes end first: more sub-envs per skill bias the score upward)")
    p.add_argument("--adaptation-episodes", type=int, default=10)
    p.add_argument("--evaluation-episodes", type=int, default=3)
    p.add_argument("--max-episode-steps", type=int, default=0,
                   help="episode length in the evaluation; 0 = Meta-World's own (500)")
    p.add_argument("--seed", type=int, default=12345)
    a = p.parse_args()
    from envs.meta_world.evaluation import evaluate
    from metarl.core.errors import MetaRLError
    from metarl.run.evaluate import load_run

    out = a.out or str(Path(a.checkpoint).parent / "metaworld_eval.json")
    try:
        _, run, meta, state = load_run(a.checkpoint)
        result = evaluate(run, meta, state["iteration"], a.checkpoint, out, a.repeats, a.meta_batch_size,
                          a.adaptation_episodes, a.evaluation_episodes, a.seed, max_episode_steps=a.max_episode_steps,
                          command=shlex.join(["python", *sys.argv]))
    except (MetaRLError, ImportError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    for split in ("train", "test"):
        r = result[split]
        print(f"{split}: success {100 * r['success_mean']:.1f} +- {100 * r['success_ci95']:.1f} %, "
              f"return {r['return_mean']:.1f}")
    print(json.dumps({s: {"success": result[s]["success_mean"], "ci95": result[s]["success_ci95"]}
                      for s in ("train", "test")} | {"versions": result["versions"]}))


if __name__ == "__main__":
    main()
