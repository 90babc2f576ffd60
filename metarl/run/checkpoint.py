"""Checkpoints: written atomically (temp file, fsync, rename), loaded without executing code (weights_only).

One format for every task family (FORMAT): {"format", "meta_params": {group: {name: tensor}}, "optimizer",
"iteration", "env_steps", "elapsed_s", "config", "wandb_id"}. Checkpoints of metarl 0.1 (the separate
supervised and meta-RL stacks) are upgraded on load (metarl.run.migrate).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from metarl.core.errors import CheckpointError

FORMAT = 2


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` to `path` so that a crash at any moment leaves either the old or the new file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (upgraded to FORMAT); a missing, corrupt or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a metarl checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or "meta_params" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} is not a metarl checkpoint (no meta_params or config)")
    if state.get("format", 1) > FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']}, newer than this metarl ({FORMAT})")
    if state.get("format", 1) < FORMAT:
        from metarl.run.migrate import upgrade

        return upgrade(state, FORMAT)
    return state
