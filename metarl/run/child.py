"""A child process (a training run under scripts/record.py or scripts/reproduce.py) that is let finish on Ctrl-C
or SIGTERM.

subprocess.run kills its child when the parent is interrupted. A Ctrl-C reaches the whole foreground process
group, so the training run got it too and is writing its checkpoint: killing it then loses the iterations since
the last one. Here the parent waits for the child's own shutdown, reading its output meanwhile so that it never
blocks on a full pipe, and is interrupted after it. A SIGTERM may reach the parent alone (`kill PID`): it is
passed on to the child (which takes copies that arrive together as one request), waited for the same way, and
then ends the parent as a Ctrl-C does. A child that had already finished its work (exit 0) when the Ctrl-C or
SIGTERM came is returned as finished, with `stop_requested` set, so that what it produced is kept before the parent
stops.
"""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from metarl.run.stopping import ours_to_handle


class ChildResult(subprocess.CompletedProcess):
    """subprocess.CompletedProcess, and whether a SIGTERM came while the child ran (it finished all the same)."""

    def __init__(self, args, returncode: int, stdout, stderr, stop_requested: bool):
        super().__init__(args, returncode, stdout, stderr)
        self.stop_requested = stop_requested


def run_child(cmd: list[str], cwd: str | Path | None = None, capture: bool = False) -> ChildResult:
    """subprocess.run(cmd, cwd=cwd, capture_output=capture, text=True), except that on KeyboardInterrupt the child
    is waited for (every further Ctrl-C too) before the interrupt is raised again; a SIGTERM is passed on to the
    child, waited for likewise, and then raised as KeyboardInterrupt. Either way a child that exited 0 (it had
    finished when the signal came) is returned instead, with stop_requested set."""
    pipe = subprocess.PIPE if capture else None
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=pipe, stderr=pipe, text=True)
    stop_requests = []

    def pass_on(signum, frame):
        stop_requests.append(signum)
        proc.send_signal(signal.SIGTERM)  # a no-op once the child has ended

    previous = signal.signal(signal.SIGTERM, pass_on) if ours_to_handle(signal.SIGTERM) else None
    try:
        try:
            out, err = proc.communicate()
        except KeyboardInterrupt:
            stop_requests.append(signal.SIGINT)
            while True:
                try:  # communicate() again returns all the output, that read before the interrupt too
                    out, err = proc.communicate()
                    break
                except KeyboardInterrupt:
                    continue
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if stop_requests and proc.returncode != 0:
        raise KeyboardInterrupt
    return ChildResult(cmd, proc.returncode, out, err, stop_requested=bool(stop_requests))
