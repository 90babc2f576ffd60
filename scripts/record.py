#!/usr/bin/env python
"""Run a training or benchmark command and keep its result in results/NAME/: the exact command, the wall time,
the machine, the commit, and what it produced (a run's eval.json and pictures; a benchmark's last JSON line).
README tables are generated from these files (scripts/results_table.py), never typed by hand. A run split across
time-limited segments is recorded by its last segment (the command with --resume): total_wall_s adds the training
time of the earlier segments, read from the run's checkpoint.

    python scripts/record.py --name sinusoid_maml --run_dir runs/sin -- \\
        .venv/bin/python scripts/train.py --config configs/sinusoid_maml.yaml --run_dir runs/sin
    python scripts/record.py --name bench_rollout_nav2d -- .venv/bin/python scripts/bench_rollout.py --env Navigation2D
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metarl.core.files import atomic_write_text  # noqa: E402
from metarl.run.child import run_child  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="results/NAME/ receives the record")
    p.add_argument("--run_dir", default="", help="the run's directory: its eval.json and PNGs are kept")
    p.add_argument("--note", default="", help="one line on the conditions (e.g. 'quiet machine')")
    p.add_argument("--results", default=str(ROOT / "results"), help="where results/NAME/ lives")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    a = p.parse_args()
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        raise SystemExit("error: give the command after --")
    out = Path(a.results) / a.name
    out.mkdir(parents=True, exist_ok=True)
    run_dir = (ROOT / a.run_dir if not Path(a.run_dir).is_absolute() else Path(a.run_dir)) if a.run_dir else None
    earlier = _earlier_training_s(run_dir) if run_dir and "--resume" in command else 0.0
    git = lambda *args: subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    # the code that runs is the one at the start; "+dirty": tracked files differed from that commit (results and
    # checkpoints aside: records and runs in progress are what this script and the runs write)
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results", ":!checkpoints")
    commit = git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    start = time.perf_counter()
    try:
        proc = run_child(command, cwd=ROOT, capture=True)
    except KeyboardInterrupt:  # the run has stopped on its own (its checkpoint written): nothing to record
        print(f"{a.name}: interrupted, nothing recorded (a training run resumes from its checkpoint)", file=sys.stderr)
        sys.exit(130)
    wall = time.perf_counter() - start
    atomic_write_text(out / "output.txt", proc.stdout[-20000:] + ("\n--- stderr ---\n" + proc.stderr[-5000:] if proc.returncode else ""))
    import torch

    record = {
        "command": shlex.join(command), "returncode": proc.returncode, "wall_s": round(wall, 1),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "note": a.note,
        "commit": commit,
        "machine": {"cpus": len(os.sched_getaffinity(0)), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__},
    }
    if earlier:  # the last segment of a resumed run: add the training time of the segments before it
        record["total_wall_s"] = round(wall + earlier, 1)
        record["earlier_segments_training_s"] = round(earlier, 1)
    lines = proc.stdout.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        record["figures"] = json.loads(lines[-1])
    if run_dir:
        # an architecture search also keeps its cell and the retrained network's evaluation
        for name in ("eval.json", "eval.png", "eval_episodes.png", "learning_curve.png", "config.yaml", "genotype.json", "retrain/eval.json"):
            if (run_dir / name).is_file():
                shutil.copy(run_dir / name, out / name.replace("/", "_"))
    atomic_write_text(out / "record.json", json.dumps(record, indent=1) + "\n")
    print(f"{a.name}: exit {proc.returncode}, {wall:.0f} s -> {out}")
    if proc.stop_requested:  # the Ctrl-C or SIGTERM came after the command had finished: recorded, then stopping
        print(f"{a.name}: stop request after the command finished: recorded, then stopped", file=sys.stderr)
        sys.exit(130)
    sys.exit(proc.returncode)


def _earlier_training_s(run_dir: Path) -> float:
    """The training time a run's checkpoint holds (its earlier segments), 0 without one."""
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        return 0.0
    from metarl.run.checkpoint import load_checkpoint

    return float(load_checkpoint(path).get("elapsed_s", 0.0))


if __name__ == "__main__":
    main()
