"""Ctrl-C in training: the first one stops the loop after the current iteration, with a checkpoint of it;
a second one interrupts at once (KeyboardInterrupt: the last periodic checkpoint stays)."""
from __future__ import annotations

import signal
import threading
from typing import Callable


class StopOnCtrlC:
    """While entered, SIGINT sets `requested` (once) instead of raising. Installed only in the main thread and
    only where Ctrl-C would raise KeyboardInterrupt: a caller's own handler, or an ignored SIGINT (a background
    job), is left alone."""

    def __init__(self, write: Callable[[str], None]):
        self.requested, self._write, self._previous = False, write, None

    def __enter__(self) -> "StopOnCtrlC":
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # the next Ctrl-C raises KeyboardInterrupt
        self._write("Ctrl-C: stopping after this iteration with its checkpoint (Ctrl-C again to stop at once)")

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
