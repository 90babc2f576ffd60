#!/usr/bin/env python
"""Meta-train any config -- supervised (H = 1) or meta-RL: parse config, build, run.

    python scripts/train.py --config configs/sinusoid_maml.yaml [--section.field value ...] [--resume]
    torchrun --nproc_per_node 2 scripts/train.py --config configs/nav2d_maml_trpo.yaml    (task batch split)
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    from metarl.run.cli import main_guard, parse_config  # noqa: E402
    from metarl.run.trainer import run  # noqa: E402
except KeyboardInterrupt:  # Ctrl-C while torch loads: one line, not an import traceback
    print("interrupted before the run started: nothing was written", file=sys.stderr)
    sys.exit(130)


@main_guard
def main() -> None:
    cfg = parse_config(description=__doc__)
    result = run(cfg)
    if "eval" not in result:  # torch.distributed ranks other than 0
        return
    report(result)
    if "retrain" in result:
        print(f"\nsearched cell (genotype.json): {result['genotype']}; the derived network trained from scratch:")
        report(result["retrain"])


def report(result: dict) -> None:
    ev, name = result["eval"], result["eval"]["metric"]
    protocol = ", ".join(f"{k} {v}" for k, v in ev["protocol"].items())
    print(f"\nheld-out evaluation: {ev['num_tasks']} test tasks of {ev['family']} ({protocol}); training: "
          f"{result['iterations_run']} iterations in {result['train_seconds']:.0f} s in this run, "
          f"{result['iterations']} in all")
    print(result["table"])
    first, last = ev[name]["mean"][0], ev[name]["mean"][-1]
    print(f"before adaptation: {name} {first:.4f}; after {ev['steps'][-1]} steps: {name} "
          + ("diverged" if last is None else f"{last:.4f}"))
    if result["stopped_early"]:
        print(f"stopped at train.time_limit_s after iteration {result['iterations']}: continue with --resume")
    print("wrote " + ", ".join(str(p) for p in result["paths"].values()) + f", {result['checkpoint']}")


if __name__ == "__main__":
    main()
