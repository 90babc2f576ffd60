#!/usr/bin/env python
"""Launch the same short 2-rank torchrun training many times in a row and check that every run ends cleanly:
exit code 0, its checkpoint and its held-out evaluation written. The end-of-run abort this guards against (a
rank leaving while rank 0 still wrote its checkpoint; torchrun then killed rank 0) is fixed in
metarl.run.distributed.Group.close; one JSON object on the last line.

    python scripts/check_distributed_runs.py --runs 50
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--config", default="configs/sinusoid_maml.yaml")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--wandb", default="offline", help="the W&B mode of the runs (offline: the default configs')")
    a = p.parse_args()
    failures, walls = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in tqdm(range(a.runs), desc="2-rank runs"):
            run_dir = Path(tmp) / f"run{i}"
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                                   "scripts/train.py", "--config", a.config, "--train.iterations", str(a.iterations),
                                   "--log.wandb", a.wandb, "--log.no_progress", "--run_dir", str(run_dir)],
                                  cwd=ROOT, capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"})
            walls.append(time.perf_counter() - start)
            missing = [f for f in ("checkpoint.pt", "eval.json") if not (run_dir / f).is_file()]
            if proc.returncode or missing:
                failures.append({"run": i, "returncode": proc.returncode, "missing": missing,
                                 "stderr_tail": proc.stderr[-1500:]})
                tqdm.write(f"run {i}: exit {proc.returncode}, missing {missing}\n{proc.stderr[-1500:]}")
    print(json.dumps({"runs": a.runs, "clean": a.runs - len(failures), "config": a.config, "iterations": a.iterations,
                      "wandb": a.wandb, "mean_wall_s": round(sum(walls) / len(walls), 1),
                      "failures": failures}))


if __name__ == "__main__":
    main()
