"""Stopping a training cleanly: the first Ctrl-C (SIGINT) or SIGTERM (`kill PID`, a scheduler's preemption, torchrun
passing one on) stops the loop after the current iteration, with a checkpoint of it; a second one stops at once (the
last periodic checkpoint stays: checkpoints are written atomically). Work with no point to stop at (the final
evaluation) takes a SIGTERM as a Ctrl-C, so that it ends with a message rather than a silent kill."""
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


def ours_to_handle(signum: int) -> bool:
    """In the main thread (the only one that may set handlers) and the signal still does what Python does by
    default: a caller's own handler, or an ignored signal (SIGINT in a background job), is left alone."""
    default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
    return threading.current_thread() is threading.main_thread() and signal.getsignal(signum) is default


class StopOnSignal:
    """While entered, the first SIGINT or SIGTERM is kept in `signum` instead of ending the process; a second one
    ends it as the default would (KeyboardInterrupt; termination), except SIGTERMs within SAME_REQUEST_S of the
    first. Installed per signal only where `ours_to_handle`."""

    def __init__(self, write: Callable[[str], None]):
        self.signum, self._write = 0, write
        self._previous: dict[int, object] = {}
        self._first = 0.0

    @property
    def requested(self) -> bool:
        return self.signum != 0

    @property
    def reason(self) -> str:
        """The request's signal as messages name it ("Ctrl-C", "SIGTERM"); "" before one."""
        return _NAMES.get(self.signum, "")

    def __enter__(self) -> "StopOnSignal":
        for signum in _NAMES:
            if ours_to_handle(signum):
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
        self.signum, self._first = signum, time.monotonic()
        self._restore(signal.SIGINT)  # the next Ctrl-C raises KeyboardInterrupt at once
        again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM or Ctrl-C"
        self._write(f"{self.reason}: stopping after this iteration with its checkpoint ({again} again to stop at once)")

    def __exit__(self, *exc) -> None:
        self._restore()


class SigtermAsCtrlC:
    """While entered, a SIGTERM raises KeyboardInterrupt as a Ctrl-C does, and `signum` records it; copies of the
    same request (within SAME_REQUEST_S) are taken once. Installed only where `ours_to_handle`."""

    def __init__(self):
        self.signum, self._first = 0, 0.0
        self._previous = None

    def __enter__(self) -> "SigtermAsCtrlC":
        if ours_to_handle(signal.SIGTERM):
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum and time.monotonic() - self._first < SAME_REQUEST_S:
            return
        self.signum, self._first = signum, time.monotonic()
        raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
