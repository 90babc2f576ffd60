#!/usr/bin/env python
"""Scaling of torchrun data parallelism on this machine: seconds per iteration of one config with one process on
one core, with two processes (torchrun, one core each: the task batch split between them), and with one process
on every core; the share of the two processes' time spent in collectives (waiting for the slower rank included);
efficiency = t(1 process, 1 core) / (2 * t(2 processes)). All side by side in one run; one JSON object on the last
line.

    python scripts/bench_distributed.py [--config configs/nav2d_maml_trpo.yaml] [--iterations 8] [-- --flag value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _seconds_per_iteration(run_dir: Path, skip: int) -> tuple[float, float | None]:
    """(median seconds per iteration after the first `skip`, the last logged collective fraction)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"time/' in line]
    rate = {r["step"]: r["time/iter_per_s"] for r in rows}
    steps = sorted(rate)
    # iter_per_s is cumulative since the start: the time of iterations skip+1..n from two of its values
    t = lambda n: n / rate[n]  # noqa: E731
    per_it = (t(steps[-1]) - t(steps[skip - 1])) / (steps[-1] - steps[skip - 1]) if skip else t(steps[-1]) / steps[-1]
    fraction = next((r["time/collective_fraction"] for r in reversed(rows) if "time/collective_fraction" in r), None)
    return per_it, fraction


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/nav2d_maml_trpo.yaml")
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--skip", type=int, default=2, help="first iterations left out of the timing (warm-up)")
    p.add_argument("overrides", nargs="*", help="after --: config flags for every run (e.g. smaller sizes)")
    a = p.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    common = ["scripts/train.py", "--config", a.config, "--train.iterations", str(a.iterations), "--train.log_every", "1",
              "--train.eval_every", "0", "--train.time_limit_s", "0", "--eval.num_tasks", "2", "--log.wandb", "disabled",
              "--log.no_progress", "--log.no_console"]
    out = {"config": a.config, "iterations": a.iterations, "cores": len(cores)}
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "one_process_one_core": ([sys.executable, *common, "--train.threads", "1"], 1),
            "two_processes": ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               *common, "--train.threads", "1"], 2),
            "one_process_all_cores": ([sys.executable, *common], 1),
        }
        for name, (cmd, _) in cases.items():
            run_dir = Path(tmp) / name
            env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
            if name != "one_process_all_cores":
                env["OMP_NUM_THREADS"] = "1"
            pin = (lambda: os.sched_setaffinity(0, {cores[0]})) if name == "one_process_one_core" else None
            proc = subprocess.run([*cmd, *a.overrides, "--run_dir", str(run_dir)], cwd=ROOT, capture_output=True,
                                  text=True, env=env, preexec_fn=pin)
            if proc.returncode:
                raise SystemExit(f"error: {name} failed:\n{proc.stderr[-3000:]}")
            per_it, fraction = _seconds_per_iteration(run_dir, a.skip)
            out[f"{name}_s_per_iteration"] = round(per_it, 4)
            if fraction is not None:
                out["two_processes_collective_fraction"] = round(fraction, 4)
            print(f"{name}: {per_it:.3f} s per iteration", flush=True)
    one, two = out["one_process_one_core_s_per_iteration"], out["two_processes_s_per_iteration"]
    out["speedup_two_vs_one_core"] = round(one / two, 3)
    out["efficiency"] = round(one / (2 * two), 3)
    out["speedup_two_vs_all_cores"] = round(out["one_process_all_cores_s_per_iteration"] / two, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
