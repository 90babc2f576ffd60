"""Writing files so that nothing is lost or half-written: every file goes to a temporary name beside its target,
is flushed to disk, then renamed over it (a crash, a full disk or a kill at any moment leaves the old file or
the new one, whole); a write that fails is one WriteError naming the file and the cause."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from metarl.core.errors import WriteError


def _reason(e: BaseException) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0] if str(e) else type(e).__name__


def ensure_dir(path: str | os.PathLike, what: str = "directory") -> Path:
    """path as a directory (created with its parents); WriteError when it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:
        raise WriteError(f"cannot create the {what} {path}: {_reason(e)}") from None
    return path


def check_writable(path: str | os.PathLike) -> Path:
    """Fail now, before long work, if `path` could not be written: its directory is made and a file tried."""
    path = Path(path)
    directory = ensure_dir(path.parent, "output directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise WriteError(f"cannot write {path}: {_reason(e)}") from None
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """write(file) into a temporary file beside `path`, fsync, rename over `path`."""
    path = Path(path)
    ensure_dir(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, (OSError, RuntimeError)):  # torch.save reports a full disk as a RuntimeError
            raise WriteError(f"could not write {path} (the previous file, if any, is kept): {_reason(e)}") from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))
