"""A child process (a training run under scripts/record.py or scripts/reproduce.py) that is let finish on Ctrl-C.

subprocess.run kills its child when the parent is interrupted. A Ctrl-C reaches the whole foreground process
group, so the training run got it too and is writing its checkpoint: killing it then loses the iterations since
the last one. Here the parent waits for the child's own shutdown, reading its output meanwhile so that it never
blocks on a full pipe, and is interrupted after it.
"""
from __future__ import annotations

import subprocess
from pathlib import Path


def run_child(cmd: list[str], cwd: str | Path | None = None, capture: bool = False) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, cwd=cwd, capture_output=capture, text=True), except that on KeyboardInterrupt the child
    is waited for (every further Ctrl-C too) before the interrupt is raised again."""
    pipe = subprocess.PIPE if capture else None
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=pipe, stderr=pipe, text=True)
    try:
        out, err = proc.communicate()
    except KeyboardInterrupt:
        while True:
            try:
                proc.communicate()
                break
            except KeyboardInterrupt:
                continue
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
