#!/usr/bin/env python
"""A chaos run: train a short config while killing it at random moments (SIGINT or SIGKILL), each time running the
same command again with --resume, until the run finishes; then check that it ended with exactly the parameters
of an uninterrupted run and that its directory needs nobody (a checkpoint, an evaluation, no lock held, no
temporary files). One JSON object on the last line.

    python scripts/chaos_run.py [--kills 20] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMAND = ["scripts/train.py", "--config", "configs/nav2d_maml_trpo.yaml", "--train.iterations", "150",
           "--train.meta_batch_size", "8", "--train.checkpoint_every", "1", "--train.time_limit_s", "0",
           "--rl.episodes_per_task", "10", "--eval.num_tasks", "10", "--log.wandb", "disabled", "--log.no_progress",
           "--log.no_console"]


def params(run_dir: Path):
    import torch

    from metarl.run.checkpoint import load_checkpoint

    meta = load_checkpoint(run_dir)["meta_params"]
    return torch.cat([v.reshape(-1) for g in sorted(meta) for _, v in sorted(meta[g].items())])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="of the kill times and signals")
    p.add_argument("--max-wait-s", type=float, default=4.0, help="a kill comes after U(0.2, this) seconds")
    a = p.parse_args()
    rng = random.Random(a.seed)
    events = []
    with tempfile.TemporaryDirectory() as tmp:
        reference, chaos = Path(tmp) / "reference", Path(tmp) / "chaos"
        start = time.perf_counter()
        subprocess.run([sys.executable, *COMMAND, "--run_dir", str(reference)], cwd=ROOT, check=True, capture_output=True)
        reference_s = time.perf_counter() - start
        kills, launches, rc = 0, 0, None
        while rc != 0:
            cmd = [sys.executable, *COMMAND, "--run_dir", str(chaos), *(["--resume"] if launches else [])]
            # SIGINT back to its default in the child: a script started in the background by a shell without job
            # control inherits it ignored, and Python then installs no KeyboardInterrupt handler
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            launches += 1
            if kills < a.kills:
                try:
                    rc = proc.wait(timeout=rng.uniform(0.2, a.max_wait_s))
                except subprocess.TimeoutExpired:
                    sig = rng.choice([signal.SIGINT, signal.SIGKILL])
                    proc.send_signal(sig)
                    rc = proc.wait()
                    kills += 1
                    err = proc.stderr.read().strip().splitlines()
                    events.append({"launch": launches, "signal": sig.name, "exit": rc,
                                   "last_line": err[-1][:200] if err else ""})
                    continue
            else:
                rc = proc.wait()
            if rc not in (0, None):
                err = proc.stderr.read().strip().splitlines()
                raise SystemExit(f"error: launch {launches} exited with {rc}: {err[-1] if err else ''}")
        import torch

        equal = torch.equal(params(chaos), params(reference))
        leftovers = sorted(f.name for f in chaos.iterdir() if ".tmp" in f.name or f.name.startswith("."))
        complete = all((chaos / f).is_file() for f in ("checkpoint.pt", "eval.json", "config.yaml"))
        from metarl.run.rundir import RunDir

        lock = RunDir(chaos)
        lock.acquire()  # raises if a dead run's lock were still held (an flock cannot be)
        lock.release()
    print(json.dumps({"kills": kills, "launches": launches, "equal_to_uninterrupted": equal, "complete": complete,
                      "leftover_files": [f for f in leftovers if f != ".lock"], "reference_s": round(reference_s, 1),
                      "signals": {s: sum(e["signal"] == s for e in events) for s in ("SIGINT", "SIGKILL")},
                      "events": events}))


if __name__ == "__main__":
    main()
