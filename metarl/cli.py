"""Entry-point helper: user errors become one line on stderr and a non-zero exit, not a traceback."""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable

from metarl.errors import MetaRLError

EXIT_USER_ERROR = 2


def main_guard(fn: Callable[..., object]) -> Callable[..., object]:
    """Wrap a script's main(): MetaRLError -> `error: message`, exit 2 (a Ctrl-C during training: its message,
    exit 130). Set METARL_TRACEBACK=1 to see the full traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MetaRLError as e:
            if os.environ.get("METARL_TRACEBACK"):
                raise
            print(f"error: {e}", file=sys.stderr)
            sys.exit(getattr(e, "exit_code", EXIT_USER_ERROR))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
