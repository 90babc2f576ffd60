"""A run directory a user can always act on: what it holds decides what the same command does, and one lock
keeps a second training out while the first one lives.

    nothing there               start at iteration 0 (with --resume too, saying so: a requeued job that always
                                resumes may have been stopped before it wrote anything)
    started, no checkpoint      (stopped by Ctrl-C, a NaN, a lost worker before the first checkpoint) the same
                                command, with or without --resume, starts it over at iteration 0
    a checkpoint                --resume continues it; without --resume it is refused (never overwritten)
    locked                      refused, naming the holder (pid, host, start time); the lock is an flock on
                                RUN_DIR/.lock, released by the kernel when its process ends however it ends

Every refusal is one line saying which command works.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from metarl.core.errors import ConfigError, RunDirBusy, WriteError
from metarl.core.files import ensure_dir

#: what a started run leaves (a checkpoint, and after it the final evaluation, make it a run to continue)
STARTED = ("config.yaml", "metrics.jsonl")
LOCK = ".lock"


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.checkpoint = self.path / "checkpoint.pt"
        self._lock_fd: int | None = None

    def started_files(self) -> list[str]:
        return [f for f in STARTED if (self.path / f).exists()]

    def check(self, resume: bool) -> str:
        """What to do with this directory: "resume" (from its checkpoint) or "start" (at iteration 0, clearing
        the files of a run that never reached a checkpoint); raises ConfigError when neither applies."""
        if self.checkpoint.exists():
            if resume:
                return "resume"
            raise ConfigError(f"{self.path} already holds a run (checkpoint.pt): continue it with the same command "
                              "plus --resume, or choose another --run_dir")
        if (self.path / "eval.json").exists():
            raise ConfigError(f"{self.path} holds a finished run's eval.json but no checkpoint: choose another --run_dir")
        return "start"  # with --resume too: a scheduler that always resumes can start a run that never began

    def acquire(self) -> None:
        """Hold the directory's lock for this process's life (created with the directory); RunDirBusy if another
        live process holds it."""
        ensure_dir(self.path, "run directory")
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise WriteError(f"cannot write in the run directory {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunDirBusy(f"{self.path} is in use by another training ({holder}): wait for it to end, or choose "
                             "another --run_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._lock_fd = fd

    def clear_started(self) -> list[str]:
        """Remove the files of a run that stopped before its first checkpoint; their names."""
        gone = self.started_files()
        for name in gone:
            (self.path / name).unlink()
        return gone

    def release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
