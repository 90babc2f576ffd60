"""Stopping a training cleanly: the first Ctrl-C (SIGINT) or SIGTERM (`kill PID`, a scheduler's preemption, torchrun
passing one on) stops the loop after the current iteration, with a checkpoint of it; a second one stops at once (the
last periodic checkpoint stays: checkpoints are written atomically)."""
from __future__ import annotations

import signal
import threading
import time
from typing import Callable

#: what each handled signal is called in messages
_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
#: SIGTERMs this soon after the first are the same request: `kill -TERM -- -PGID` reaches a script's wrapper
#: (scripts/record.py, metarl.run.child) and the run at once, and the wrapper passes its copy on
SAME_REQUEST_S = 3.0


def _untouched(signum: int) -> bool:
    """The signal still does what Python does by default: a caller's own handler, or an ignored signal (SIGINT in
    a background job), is left alone."""
    default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
    return signal.getsignal(signum) is default


class StopOnSignal:
    """While entered, the first SIGINT or SIGTERM sets `requested` (and `reason`, "Ctrl-C" or "SIGTERM") instead of
    ending the process; a second one ends it as the default would (KeyboardInterrupt; termination), except SIGTERMs
    within SAME_REQUEST_S of the first. Installed only in the main thread, and per signal only where it is
    `_untouched`."""

    def __init__(self, write: Callable[[str], None]):
        self.requested, self.reason, self._write = False, "", write
        self._previous: dict[int, object] = {}
        self._first = 0.0

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in _NAMES:
                if _untouched(signum):
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _restore(self, *signums: int) -> None:
        for signum in signums or list(self._previous):
            if signum in self._previous:
                signal.signal(signum, self._previous.pop(signum))

    def _handle(self, signum, frame) -> None:
        if self.requested:  # only SIGTERM's handler stays installed after the first request
            if time.monotonic() - self._first < SAME_REQUEST_S:
                return
            self._restore()
            signal.raise_signal(signum)
            return
        self.requested, self.reason, self._first = True, _NAMES[signum], time.monotonic()
        self._restore(signal.SIGINT)  # the next Ctrl-C raises KeyboardInterrupt at once
        again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM or Ctrl-C"
        self._write(f"{self.reason}: stopping after this iteration with its checkpoint ({again} again to stop at once)")

    def __exit__(self, *exc) -> None:
        self._restore()
